"""The command line a gateway vendor or an operator lives in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from homemonitor.cli import main
from homemonitor.protocol import json_schema

DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homemonitor.cli", *argv],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        check=False,
    )


def test_payload_check_prints_normalised_readings() -> None:
    """A good payload exits 0 and shows each reading in canonical units."""
    payload = {
        "v": 1,
        "readings": [
            {
                "device_id": "scale-1",
                "metric": "body_weight",
                "unit": "lb",
                "value": 176.4,
                "measured_at": "2026-11-22T07:00:00+01:00",
            },
            {
                "device_id": "cuff-1",
                "metric": "blood_pressure",
                "unit": "kPa",
                "systolic": 16,
                "diastolic": 10,
                "measured_at": "2026-11-22T07:01:00+01:00",
            },
        ],
    }
    done = run("payload", "check", "--json", "-", stdin=json.dumps(payload).encode())
    out = json.loads(done.stdout)
    assert 0 == done.returncode
    assert [{"body_weight": 80.014}, {"systolic": 120.01, "diastolic": 75.006}] == [
        r["values"] for r in out["readings"]
    ]
    assert "2026-11-22T06:00:00+00:00" == out["readings"][0]["measured_at"]


def test_payload_check_lists_every_reason(tmp_path: Path) -> None:
    """A bad payload exits 1 and names each problem with its position and reason."""
    payload = {
        "v": 1,
        "readings": [
            {
                "device_id": "oxi-1",
                "metric": "spo2",
                "value": 120,
                "measured_at": "2026-11-22T07:00:00Z",
            },
            {
                "device_id": "oxi-1",
                "metric": "spo2",
                "value": 97,
                "measured_at": "2026-11-22T07:00:00",
            },
            {"device_id": "x", "metric": "temperature", "value": 37},
        ],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    done = run("payload", "check", str(path))
    assert 1 == done.returncode
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL [0] implausible: spo2 outside plausible range")
    assert lines[1].startswith("FAIL [1] no_timestamp:")
    assert lines[2].startswith("FAIL [2] unknown_metric:")
    assert "0 accepted, 3 rejected" == lines[-1]


def test_published_schema_is_current() -> None:
    """docs/payload.schema.json is what the models generate (homemonitor payload schema)."""
    assert json_schema() == json.loads((DOCS / "payload.schema.json").read_text())


def test_help_explains_and_errors_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists the commands; a missing database says which variable to set."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "registry" in capsys.readouterr().out
    code = main(["migrate", "--database-url", ""])
    err = capsys.readouterr().err
    assert 2 == code
    assert "set HOMEMONITOR_DATABASE_URL" in err


def test_shared_group_with_mqtt_311_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shared-subscription group with MQTT 3.1.1 stops 'run' at once, saying what to change."""
    monkeypatch.setenv("HOMEMONITOR_MQTT_SHARED_GROUP", "homemonitor")
    monkeypatch.setenv("HOMEMONITOR_MQTT_PROTOCOL", "3.1.1")
    code = main(["run"])
    err = capsys.readouterr().err
    assert 2 == code
    assert "HOMEMONITOR_MQTT_SHARED_GROUP needs HOMEMONITOR_MQTT_PROTOCOL=5" in err
    assert "Traceback" not in err
