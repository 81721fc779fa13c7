"""The command line a gateway vendor or an operator lives in."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from homemonitor.cli import main
from homemonitor.protocol import json_schema
from tests.conftest import REGISTRY

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


def test_payload_check_judges_gateway_and_pairing_against_a_registry_file(
    tmp_path: Path,
) -> None:
    """With --registry and --gateway, each reading gets the worker's registry verdict."""
    registry_file = tmp_path / "registry.json"
    registry_file.write_text(json.dumps(REGISTRY))
    at = "2026-11-22T07:00:00Z"
    payload = {
        "v": 1,
        "readings": [
            {"device_id": d, "metric": "body_weight", "value": 70, "measured_at": at}
            for d in ("scale-1", "oxi-2", "ghost-7", "spare-9")
        ],
    }
    body = json.dumps(payload).encode()
    home = run(
        "payload", "check", "--registry", str(registry_file), "--gateway", "gw-1", "-", stdin=body
    )
    stranger = run(
        "payload", "check", "--registry", str(registry_file), "--gateway", "gw-9", "-", stdin=body
    )
    alone = run("payload", "check", "--gateway", "gw-1", "-", stdin=body)
    assert (1, 1, 2) == (home.returncode, stranger.returncode, alone.returncode)
    assert [
        "ok   [0] scale-1 body_weight at 2026-11-22T07:00:00+00:00: body_weight=70.0 kg",
        "FAIL [1] foreign_device: device is not paired with the publishing gateway at measured_at",
        "FAIL [2] unknown_device: device is not in the registry",
        "FAIL [3] unbound_device: device is bound to no patient at measured_at",
        "1 accepted, 3 rejected",
    ] == [line.split("  FLAGGED")[0] for line in home.stdout.splitlines()]
    assert ["unknown_gateway"] * 4 == [
        line.split()[2].rstrip(":") for line in stranger.stdout.splitlines()[:-1]
    ]
    assert "--gateway needs --registry" in alone.stderr


async def test_registry_apply_counts_pairings_and_warns_of_unpaired_devices(
    dsn: str, tmp_path: Path
) -> None:
    """'registry apply' reports gateways and pairings, and names bound devices no gateway has."""
    reg = copy.deepcopy(REGISTRY)
    reg["gateways"][1]["devices"] = []  # oxi-2 stays bound to p-2, but no hub may send it
    registry_file = tmp_path / "registry.json"
    registry_file.write_text(json.dumps(reg))
    done = await asyncio.to_thread(
        run, "registry", "apply", str(registry_file), "--database-url", dsn
    )
    assert 0 == done.returncode
    assert "5 devices, 2 gateways, 4 pairings, 4 bindings" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert [
        "warning: 1 bound devices are paired with no gateway (oxi-2); their readings are "
        "quarantined as foreign_device until a gateway lists them"
    ] == warnings


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
