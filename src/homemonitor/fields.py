"""Field types the registry and the API share: ids, and text a person typed.

What enters through a model is checked there, so the database never sees a value it
cannot store: PostgreSQL ``text`` cannot hold U+0000, asyncpg refuses a lone surrogate,
and a ``bigint`` ends at 2**63 - 1. A bad value is a validation error naming its field
(a 422 from the API, a :class:`~homemonitor.errors.RegistryError` from the registry),
never a failed query.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

#: Care teams, clinicians and patients: opaque ASCII ids, the same in a URL, a log line
#: and the registry file. Devices and gateways have their own patterns in the contract.
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

#: The largest id a ``bigint`` (``bigserial``) column holds.
BIGINT_MAX = 2**63 - 1

# C0 controls except tab, line feed and carriage return; DEL and C1 controls. Regex
# escapes, not the characters, so the pattern is the same text in Python and in the
# published JSON Schema (ECMA-262).
_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# ... and lone surrogates, which JSON can spell (\ud800) but UTF-8 cannot carry. They stay
# out of the published pattern: a surrogate range is not a valid regex for validators
# outside JavaScript (jsonschema-rs refuses the whole schema).
_UNSAFE_RE = re.compile(f"[{_CONTROLS}\\ud800-\\udfff]")


def _plain(value: str) -> str:
    found = _UNSAFE_RE.search(value)
    if found is not None:
        msg = (
            f"must not contain control characters or lone surrogates "
            f"(U+{ord(found.group()):04X} at position {found.start()})"
        )
        raise ValueError(msg)
    return value


#: Free text (a note, a name): any character but controls other than tab and line breaks,
#: and lone surrogates. The pattern is published so clients (and schemathesis) know it;
#: the check is Python's: pydantic's patterns run in Rust, where a lone surrogate cannot be.
PlainText = Annotated[
    str,
    Field(json_schema_extra={"pattern": f"^[^{_CONTROLS}]*$"}),
    AfterValidator(_plain),
]

#: A registry id, by :data:`ID_PATTERN`.
Ident = Annotated[str, Field(pattern=ID_PATTERN)]

#: An HSA id (Inera's catalogue of people in Swedish health care): the country code, the
#: organisation number of who issued it, a dash and a serial, e.g. ``SE2321000016-1003``.
#: Single sign-on finds a clinician by it (docs/web.md).
HsaId = Annotated[str, Field(pattern=r"^SE[0-9]{10}-[0-9A-Za-z]{1,31}$")]
