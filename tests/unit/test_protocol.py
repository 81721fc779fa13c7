"""The topic layout of the gateway contract (``contract.protocol``, docs/protocol.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from homemonitor.contract.protocol import (
    TOPIC_PREFIX,
    PayloadFormat,
    Route,
    is_gateway_id,
    parse_topic,
    readings_topic,
)
from homemonitor_devices.gateway import Gateway, GatewayError

BASE = f"{TOPIC_PREFIX}/gw-1/readings"
NATIVE, FHIR, BLE = PayloadFormat.NATIVE, PayloadFormat.FHIR, PayloadFormat.BLE

TOPICS = [
    ("native", BASE, Route("gw-1", NATIVE)),
    ("fhir", f"{BASE}/fhir", Route("gw-1", FHIR)),
    ("ble", f"{BASE}/ble", Route("gw-1", BLE)),
    ("gateway-of-64", f"{TOPIC_PREFIX}/{'g' * 64}/readings", Route("g" * 64, NATIVE)),
    ("gateway-of-65", f"{TOPIC_PREFIX}/{'g' * 65}/readings", None),
    ("gateway-empty", f"{TOPIC_PREFIX}//readings", None),
    ("gateway-with-a-dot", f"{TOPIC_PREFIX}/gw.1/readings", None),
    ("gateway-wildcard", f"{TOPIC_PREFIX}/+/readings", None),
    ("gateway-trailing-newline", f"{TOPIC_PREFIX}/gw-1\n/readings", None),
    ("gateway-trailing-newline-fhir", f"{TOPIC_PREFIX}/gw-1\n/readings/fhir", None),
    ("format-json-spelled-out", f"{BASE}/json", None),
    ("format-unknown", f"{BASE}/xml", None),
    ("format-upper-case", f"{BASE}/FHIR", None),
    ("format-empty-trailing-slash", f"{BASE}/", None),
    ("one-level-too-deep", f"{BASE}/fhir/extra", None),
    ("no-readings-level", f"{TOPIC_PREFIX}/gw-1", None),
    ("other-leaf", f"{TOPIC_PREFIX}/gw-1/status", None),
    ("other-leaf-with-format", f"{TOPIC_PREFIX}/gw-1/alerts/fhir", None),
    ("other-version", "homemonitor/v2/gw/gw-1/readings", None),
    ("other-prefix", "homemonitor/v1/gateway/gw-1/readings", None),
    ("leading-slash", f"/{BASE}", None),
    ("upper-case-prefix", "HOMEMONITOR/v1/gw/gw-1/readings", None),
    ("empty", "", None),
]


@pytest.mark.parametrize(("topic", "expected"), [r[1:] for r in TOPICS], ids=[r[0] for r in TOPICS])
def test_parse_topic(topic: str, expected: Route | None) -> None:
    """A topic in the documented layout gives its gateway and format; anything else None."""
    assert expected == parse_topic(topic)


@pytest.mark.parametrize("fmt", list(PayloadFormat), ids=[f.name.lower() for f in PayloadFormat])
def test_readings_topic_parses_back(fmt: PayloadFormat) -> None:
    """The topic a gateway is told to publish to parses back to that gateway and format."""
    assert Route("gw-7_a", fmt) == parse_topic(readings_topic("gw-7_a", fmt))


GATEWAY_IDS = [
    ("short", "g", True),
    ("letters-digits-dash-underscore", "GW_a-9", True),
    ("sixty-four", "g" * 64, True),
    ("sixty-five", "g" * 65, False),
    ("empty", "", False),
    ("dot", "gw.1", False),
    ("colon", "gw:1", False),
    ("slash", "gw/1", False),
    ("space", "gw 1", False),
    ("wildcard-plus", "+", False),
    ("wildcard-hash", "#", False),
    ("non-ascii-letter", "gw-ö", False),
    ("trailing-newline", "gw-1\n", False),
    ("leading-newline", "\ngw-1", False),
]


@pytest.mark.parametrize(
    ("gateway_id", "expected"), [r[1:] for r in GATEWAY_IDS], ids=[r[0] for r in GATEWAY_IDS]
)
def test_is_gateway_id(gateway_id: str, expected: bool) -> None:
    """A gateway id is 1-64 of A-Z, a-z, 0-9, '_' and '-', the whole string and nothing more."""
    assert expected == is_gateway_id(gateway_id)


@pytest.mark.parametrize(
    "gateway_id",
    [r[1] for r in GATEWAY_IDS if not r[2]],
    ids=[r[0] for r in GATEWAY_IDS if not r[2]],
)
def test_reference_gateway_refuses_an_id_the_service_refuses(gateway_id: str) -> None:
    """The reference gateway will not start under an id whose topics the service refuses."""
    with pytest.raises(GatewayError):
        Gateway(gateway_id, queue_path=Path("never-opened.sqlite3"))
