"""What every decoder needs: loading a JSON object safely, judging an envelope's head, and
saying what was wrong."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from homemonitor.contract.protocol import supported_version
from homemonitor.contract.readings import Decoded, Reason, Rejection

_Head = TypeVar("_Head", bound=BaseModel)


def refuse_message(reason: Reason, detail: str) -> Decoded:
    """The whole message refused for ``reason``."""
    return Decoded(rejections=[Rejection(reason, detail)])


def load_object(payload: bytes, what: str = "a JSON object") -> dict[str, Any] | Decoded:
    """``payload`` as a JSON object, or the whole message refused as malformed.

    Every way JSON can fail is caught here, including nesting deep enough to exhaust the
    parser's recursion (a crafted payload must never take the worker down).
    """
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        return refuse_message(
            Reason.MALFORMED, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
    except UnicodeDecodeError as exc:
        return refuse_message(Reason.MALFORMED, f"not JSON: not UTF-8 at byte {exc.start}")
    except (ValueError, RecursionError) as exc:  # digit limits, nesting
        return refuse_message(Reason.MALFORMED, f"not JSON: {exc.__class__.__name__}")
    if not isinstance(data, dict):
        return refuse_message(Reason.MALFORMED, f"payload must be {what}")
    return data


def envelope_head(data: dict[str, Any], model: type[_Head]) -> _Head | Decoded:
    """``data`` judged as ``model`` (an envelope with its items left raw), or the message refused.

    The version comes first: a payload of another version is ``unsupported_version``
    whatever else is wrong with it; anything else ``model`` refuses is ``malformed``.
    """
    if not supported_version(data.get("v")):
        return refuse_message(
            Reason.UNSUPPORTED_VERSION,
            "field 'v' must be 1 (the payload version this service speaks)",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return refuse_message(Reason.MALFORMED, describe(exc, prefix=""))


def item_rejection(
    reason: Reason, exc: ValidationError, where: str, index: int, raw: object
) -> Rejection:
    """Item ``index`` (at ``where``) refused for ``reason``, naming its device if it gives one."""
    device = raw.get("device_id") if isinstance(raw, dict) else None
    return Rejection(
        reason, describe(exc, prefix=where), index, device if isinstance(device, str) else None
    )


def describe(exc: ValidationError, prefix: str) -> str:
    """Every validation error as 'where: what', without the offending input."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(p) for p in error["loc"])
        where = ".".join(p for p in (prefix, loc) if p)
        parts.append(f"{where or 'payload'}: {error['msg']}")
    return "; ".join(parts)
