"""What every decoder needs: loading a JSON object safely, and saying what was wrong."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from homemonitor.contract.readings import Decoded, Reason, Rejection


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


def describe(exc: ValidationError, prefix: str) -> str:
    """Every validation error as 'where: what', without the offending input."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = ".".join(str(p) for p in error["loc"])
        where = ".".join(p for p in (prefix, loc) if p)
        parts.append(f"{where or 'payload'}: {error['msg']}")
    return "; ".join(parts)
