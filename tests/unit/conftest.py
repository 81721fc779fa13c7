"""Unit tests: the pure parts, with nothing started (no Mosquitto, no PostgreSQL, no network).

``make test`` runs this folder first, with ``--confcutdir=tests/unit`` so that the service
fixtures in ``tests/conftest.py`` are not even loaded: a test here that needs a service
fails at once instead of starting one. Tests that need a broker or a database belong in
``tests/``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, NoReturn

import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every outgoing connection: a unit test that reaches for a service fails fast."""

    def refuse(sock: socket.socket, address: Any, *_: Any) -> NoReturn:
        msg = f"unit tests need no services; this one tried to connect to {address!r}"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def reference() -> Path:
    """The folder of official FHIR examples; the test is skipped when it is absent."""
    configured = os.environ.get("HOMEMONITOR_FHIR_REFERENCE")
    folder = (
        Path(configured)
        if configured
        else Path(__file__).resolve().parents[3] / "shared" / "reference" / "fhir"
    )
    if not folder.is_dir():
        pytest.skip(f"official FHIR examples not found at {folder} (HOMEMONITOR_FHIR_REFERENCE)")
    return folder
