"""Payload decoders: every format the field speaks ends in the same normalised readings.

:func:`decode` picks the decoder the topic names. Decoders convert units and refuse what
carries no usable value; plausibility and clock sanity are checked afterwards, in one
place (:mod:`homemonitor.ingest.validation`), whatever the format.
"""

from __future__ import annotations

from homemonitor.contract.protocol import PayloadFormat
from homemonitor.contract.readings import Decoded
from homemonitor.decoding.native import decode_native

__all__ = ["decode"]


def decode(fmt: PayloadFormat, payload: bytes) -> Decoded:
    """Decode one message body of format ``fmt`` into readings and rejections."""
    if fmt is PayloadFormat.FHIR:
        from homemonitor.decoding.fhir import decode_fhir  # noqa: PLC0415 - optional format

        return decode_fhir(payload)
    if fmt is PayloadFormat.BLE:
        from homemonitor.decoding.bluetooth import decode_ble  # noqa: PLC0415

        return decode_ble(payload)
    return decode_native(payload)
