"""Unit tests: the pure parts, with nothing started (no Mosquitto, no PostgreSQL, no network).

``make test`` runs this folder first, with ``--confcutdir=tests/unit`` so that the service
fixtures in ``tests/conftest.py`` are not even loaded: a test here that needs a service
fails at once instead of starting one. Tests that need a broker or a database belong in
``tests/``.
"""

from __future__ import annotations

import socket
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
