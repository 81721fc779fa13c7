"""The command line a gateway vendor or an operator lives in."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from homemonitor import __version__
from homemonitor.cli import main
from homemonitor.contract.protocol import json_schema
from homemonitor.embedded import PrivatePostgres, free_port
from tests.conftest import REGISTRY

DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(
    *argv: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own; ``env`` replaces every HOMEMONITOR_* variable."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("HOMEMONITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "homemonitor.cli", *argv],
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        check=False,
        env=base | (env or {}) if env is not None else None,
        cwd=cwd,
    )


def test_help_imports_neither_the_benchmark_nor_the_pipeline() -> None:
    """Building the parser (every command's start-up) loads no bench, numpy, asyncpg or MQTT."""
    code = (
        "import sys; from homemonitor.cli import build_parser; build_parser().format_help(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'homemonitor_bench', 'numpy', 'asyncpg', 'aiomqtt', 'paho'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == done.stdout.strip()


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


def test_payload_check_judges_as_the_worker_with_its_settings() -> None:
    """payload check refuses coerced types and readings beyond HOMEMONITOR_RETENTION."""
    now = datetime.now(UTC).replace(microsecond=0)

    def spo2(**fields: object) -> dict[str, object]:
        base = {"device_id": "oxi-2", "metric": "spo2", "value": 96}
        return base | {"measured_at": now.isoformat()} | fields

    payload = {
        "v": 1,
        "readings": [
            spo2(value="96"),
            spo2(measured_at=(now - timedelta(days=100)).isoformat()),
            spo2(device_id=" oxi-2"),
            spo2(measured_at=int(now.timestamp())),
            spo2(),
        ],
    }
    done = run(
        "payload",
        "check",
        "--json",
        "-",
        stdin=json.dumps(payload).encode(),
        env={"HOMEMONITOR_RETENTION": "90 days"},
    )
    out = json.loads(done.stdout)
    assert 1 == done.returncode
    assert [
        (0, "malformed"),
        (1, "beyond_retention"),
        (2, "malformed"),
        (3, "no_timestamp"),
    ] == [(p["index"], p["reason"]) for p in out["rejected"]]
    assert [4] == [r["index"] for r in out["readings"]]


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


MISTAKES = [
    (
        "missing payload file",
        ["payload", "check", "/missing.json"],
        {},
        "homemonitor: /missing.json: No such file or directory",
    ),
    (
        "unknown log level",
        ["run"],
        {"HOMEMONITOR_LOG_LEVEL": "verbose"},
        "homemonitor: invalid setting: HOMEMONITOR_LOG_LEVEL: Input should be 'DEBUG', "
        "'INFO', 'WARNING', 'ERROR' or 'CRITICAL'",
    ),
    (
        "not a PostgreSQL DSN",
        ["migrate"],
        {"HOMEMONITOR_DATABASE_URL": "mysql://admin:s3cret@db/x"},
        "homemonitor: invalid setting: HOMEMONITOR_DATABASE_URL: must be a URL like "
        "postgresql://user:password@host:5432/database",
    ),
    (
        "a port that is no number",
        ["run"],
        {"HOMEMONITOR_MQTT_PORT": "eighteen"},
        "homemonitor: invalid setting: HOMEMONITOR_MQTT_PORT: Input should be a valid "
        "integer, unable to parse string as an integer",
    ),
    (
        "a secret both in the environment and in a file",
        ["run"],
        {"HOMEMONITOR_MQTT_PASSWORD": "x", "HOMEMONITOR_MQTT_PASSWORD_FILE": "/run/secrets/mqtt"},
        "homemonitor: HOMEMONITOR_MQTT_PASSWORD and HOMEMONITOR_MQTT_PASSWORD_FILE are both "
        "set: set one of them",
    ),
    (
        "a secret file that is missing",
        ["run"],
        {"HOMEMONITOR_DATABASE_PASSWORD_FILE": "/run/secrets/missing"},
        "homemonitor: HOMEMONITOR_DATABASE_PASSWORD_FILE=/run/secrets/missing: cannot read it "
        "([Errno 2] No such file or directory: '/run/secrets/missing')",
    ),
    (
        "missing registry file",
        ["registry", "apply", "/missing.yaml", "--database-url", "postgresql://u@127.0.0.1/x"],
        {},
        "homemonitor: cannot read /missing.yaml: [Errno 2] No such file or directory: "
        "'/missing.yaml'",
    ),
    (
        "nothing listening",
        ["migrate", "--database-url", "postgresql://u:s3cret@127.0.0.1:{port}/x"],
        {},
        "homemonitor: cannot connect to the database 127.0.0.1:{port}/x: [Errno 111] "
        "Connect call failed ('127.0.0.1', {port})",
    ),
]


@pytest.mark.parametrize(
    ("name", "argv", "env", "expected"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_a_mistake_is_one_line_on_stderr_and_exit_2(
    name: str, argv: list[str], env: dict[str, str], expected: str, tmp_path: Path
) -> None:
    """A missing file, a bad setting or an unreachable database: one clear line, exit 2."""
    port = str(free_port())
    done = run(*(a.replace("{port}", port) for a in argv), env=env, cwd=tmp_path)
    assert (2, [expected.replace("{port}", port)], "") == (
        done.returncode,
        done.stderr.splitlines(),
        done.stdout,
    )


def test_a_database_that_does_not_exist_is_one_line(
    pg_cluster: PrivatePostgres, tmp_path: Path
) -> None:
    """A DSN naming a database the server does not have: one line naming it, exit 2."""
    dsn = pg_cluster.dsn.replace("/hm_template", "/no_such_db")
    done = run("migrate", "--database-url", dsn, env={}, cwd=tmp_path)
    assert (2, 1) == (done.returncode, len(done.stderr.splitlines()))
    assert done.stderr.startswith("homemonitor: cannot connect to the database ")
    assert done.stderr.rstrip().endswith('database "no_such_db" does not exist')


def test_version() -> None:
    """--version prints the program and its version."""
    done = run("--version")
    assert (0, f"homemonitor {__version__}\n") == (done.returncode, done.stdout)


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
