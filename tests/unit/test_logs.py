"""logs.configure: our records and other libraries' in one format, data as fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from homemonitor import logs

NAME = "homemonitor.test_logs"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Give the root logger back its handlers and levels after the test configured it."""
    root = logging.getLogger()
    noisy = [logging.getLogger(name) for name in ("mqtt", "uvicorn.access")]
    saved = (root.handlers[:], root.level, [lg.level for lg in noisy])
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for lg, level in zip(noisy, saved[2], strict=True):
        lg.setLevel(level)


def _emit() -> None:
    """One event of ours, one record from a library that logs through stdlib, one failure."""
    log = logs.get_logger(NAME)
    log.info("quarantined", count=2, reasons=["implausible", "malformed"])
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("decoder failed; message quarantined", format="native")
    log.debug("below the level: not written")


@pytest.mark.usefixtures("restore_logging")
def test_json_is_one_object_per_line_with_the_fields_at_the_top(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """json: timestamp, level, logger, event first, the event's fields beside them."""
    logs.configure("json", "INFO")
    _emit()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [
        {
            "level": "info",
            "logger": NAME,
            "event": "quarantined",
            "count": 2,
            "reasons": ["implausible", "malformed"],
        },
        {"level": "warning", "logger": "uvicorn.error", "event": "Started server process [42]"},
        {
            "level": "error",
            "logger": NAME,
            "event": "decoder failed; message quarantined",
            "format": "native",
        },
    ] == [{k: v for k, v in line.items() if k not in ("timestamp", "exception")} for line in lines]
    assert [["timestamp", "level", "logger", "event"]] * 3 == [list(line)[:4] for line in lines]
    assert lines[2]["exception"].endswith("ValueError: boom")


@pytest.mark.usefixtures("restore_logging")
def test_text_shows_the_fields_as_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    """text: one line per event with key=value fields; a traceback follows its line."""
    logs.configure("text", "INFO")
    _emit()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith(f"[{NAME}] count=2 reasons=['implausible', 'malformed']")
    assert "[info     ] quarantined " in lines[0]
    assert "[warning  ] Started server process [42]" in lines[1]
    assert lines[1].endswith("[uvicorn.error]")
    assert lines[2].endswith(f"[{NAME}] format=native")
    assert ("Traceback (most recent call last):", "ValueError: boom") == (lines[3], lines[-1])


def test_without_configure_a_record_still_reads_as_event_and_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Any other handler (stdlib's last resort, pytest's) gets ``event key=value`` as message."""
    caplog.set_level(logging.INFO, logger=NAME)
    logs.get_logger(NAME).info("registry loaded", revision=3, devices=5)
    assert ["registry loaded revision=3 devices=5"] == [r.getMessage() for r in caplog.records]
    assert (3, 5) == (caplog.records[0].msg["revision"], caplog.records[0].msg["devices"])
