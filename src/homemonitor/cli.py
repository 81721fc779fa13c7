"""The ``homemonitor`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from homemonitor import logs
from homemonitor.errors import ConfigurationError, HomemonitorError
from homemonitor.settings import Settings

EPILOG = """\
Configuration comes from HOMEMONITOR_* environment variables (see README, 'Configuration').
Start with 'homemonitor demo': it needs nothing configured."""


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        msg = f"invalid settings: {problems}"
        raise ConfigurationError(msg) from None


def _problem(error: ErrorDetails) -> str:
    """One settings error: the variable (when it is one field) and what is wrong."""
    text = error["msg"].removeprefix("Value error, ")
    if error["loc"]:
        return f"HOMEMONITOR_{str(error['loc'][0]).upper()}: {text}"
    return text


def _dsn(args: argparse.Namespace) -> str:
    settings = _settings(args)
    if settings.database_url is None:
        msg = "no database: pass --database-url or set HOMEMONITOR_DATABASE_URL"
        raise HomemonitorError(msg)
    return settings.database_url.get_secret_value()


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, object]]) -> object:
    async def runner() -> object:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


def cmd_run(args: argparse.Namespace) -> int:
    from homemonitor.app import serve  # noqa: PLC0415 - keep 'payload check' light

    settings = _settings(args)
    logs.configure(settings.log_format, settings.log_level)
    _run_until_signal(lambda stop: serve(settings, stop, http=not args.no_http))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from homemonitor import database  # noqa: PLC0415

    async def main() -> None:
        pool = await database.create_pool(_dsn(args), max_size=1)
        async with pool, pool.acquire() as conn:
            mode = await database.migrate(conn, retention=_settings(args).retention)
        print(f"database is up to date; storage mode: {mode}")

    asyncio.run(main())
    return 0


def cmd_registry_apply(args: argparse.Namespace) -> int:
    from homemonitor import database, registry  # noqa: PLC0415

    reg = registry.load_file(Path(args.file))

    async def main() -> registry.ApplySummary:
        pool = await database.create_pool(_dsn(args), max_size=1)
        async with pool, pool.acquire() as conn:
            await database.migrate(conn, retention=_settings(args).retention)
            return await registry.apply(conn, reg)

    s = asyncio.run(main())
    print(
        f"applied {args.file}: {s.care_teams} care teams, {s.clinicians} clinicians, "
        f"{s.patients} patients, {s.devices} devices, {s.bindings} bindings, "
        f"{s.plans_added} new care-plan versions"
    )
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    from homemonitor import auth, database  # noqa: PLC0415

    async def main() -> str:
        pool = await database.create_pool(_dsn(args), max_size=1)
        async with pool, pool.acquire() as conn:
            try:
                return await auth.issue_token(conn, args.clinician, args.label)
            except LookupError as exc:
                raise HomemonitorError(str(exc)) from exc

    print(asyncio.run(main()))
    return 0


def cmd_payload_check(args: argparse.Namespace) -> int:
    from homemonitor.decoding import decode  # noqa: PLC0415
    from homemonitor.protocol import PayloadFormat  # noqa: PLC0415
    from homemonitor.validation import ClockPolicy, validate  # noqa: PLC0415

    payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    decoded = decode(PayloadFormat(args.format), payload)
    accepted, implausible = validate(decoded.readings, datetime.now(UTC), ClockPolicy())
    rejections = sorted(
        decoded.rejections + implausible, key=lambda r: -1 if r.index is None else r.index
    )
    readings: list[dict[str, Any]] = [
        {
            "index": r.index,
            "device_id": r.device_id,
            "metric": r.metric.value,
            "measured_at": r.measured_at.astimezone(UTC).isoformat(),
            "values": {q.value: round(v, 3) for q, v in r.values.items()},
            "units": {q.value: q.unit for q in r.values},
            "flags": [f.value for f in r.flags],
        }
        for r in accepted
    ]
    problems = [
        {"index": r.index, "reason": r.reason.value, "detail": r.detail} for r in rejections
    ]
    if args.json:
        print(json.dumps({"readings": readings, "rejected": problems}, indent=2))
    else:
        for r in readings:
            values = ", ".join(f"{k}={v} {r['units'][k]}" for k, v in r["values"].items())
            flags = f"  FLAGGED: {', '.join(r['flags'])}" if r["flags"] else ""
            print(
                f"ok   [{r['index']}] {r['device_id']} {r['metric']} "
                f"at {r['measured_at']}: {values}{flags}"
            )
        for p in problems:
            where = "message" if p["index"] is None else f"[{p['index']}]"
            print(f"FAIL {where} {p['reason']}: {p['detail']}")
        print(f"{len(readings)} accepted, {len(problems)} rejected")
    return 1 if problems else 0


def cmd_payload_schema(args: argparse.Namespace) -> int:
    if args.format == "ble":
        from homemonitor.decoding.bluetooth import BleEnvelope  # noqa: PLC0415

        schema = BleEnvelope.model_json_schema()
    else:
        from homemonitor.protocol import json_schema  # noqa: PLC0415

        schema = json_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from homemonitor.demo import run_demo  # noqa: PLC0415

    logs.configure("text", "WARNING")
    summary = _run_until_signal(
        lambda stop: run_demo(
            stop,
            duration=args.duration,
            patients=args.patients,
            seed=args.seed,
            speed=args.speed,
            days=args.days,
            http_port=args.port,
            quiet=args.json,
        )
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import math  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    from homemonitor_devices.gateway import TlsConfig  # noqa: PLC0415
    from homemonitor_devices.simulate import demo_clinic, run_simulation  # noqa: PLC0415

    reg, assignments = demo_clinic(args.patients, args.seed, days=args.days)
    if args.write_registry:
        Path(args.write_registry).write_text(
            yaml.safe_dump(reg, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
        print(
            f"wrote the registry of {len(reg['patients'])} simulated patients to "
            f"{args.write_registry}; apply it with 'homemonitor registry apply "
            f"{args.write_registry}' before simulating"
        )
        return 0
    tls = TlsConfig(ca_file=Path(args.tls_ca)) if args.tls_ca else None
    queue_dir = Path(args.queue_dir or tempfile.mkdtemp(prefix="homemonitor-gateways-"))
    speed = math.inf if args.speed == 0 else args.speed
    summary = _run_until_signal(
        lambda stop: run_simulation(
            assignments,
            queue_dir=queue_dir,
            host=args.host,
            port=args.port,
            speedup=speed,
            tls=tls,
            stop=stop,
        )
    )
    print(
        f"\n{getattr(summary, 'published', 0)} messages published "
        f"({getattr(summary, 'duplicates', 0)} deliberate duplicates, "
        f"{getattr(summary, 'garbage', 0)} garbage); gateway queues in {queue_dir}"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from homemonitor import bench  # noqa: PLC0415 - heavy, and only for this command

    return bench.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homemonitor",
        description="Home-monitoring telemetry for primary care: MQTT readings in, "
        "care-plan alerts out, nothing lost.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--database-url", help="PostgreSQL DSN (default: HOMEMONITOR_DATABASE_URL)")

    run = sub.add_parser(
        "run",
        help="run the service: worker, clinician API, /metrics",
        description="Run the ingestion worker, the clinician API and the ops "
        "endpoints until SIGTERM; then drain, commit and exit.",
        epilog=EPILOG,
    )
    run.add_argument("--no-http", action="store_true", help="worker only (no API or /metrics)")
    run.set_defaults(func=cmd_run)

    mig = sub.add_parser("migrate", help="apply database migrations (also done at start)")
    db_option(mig)
    mig.set_defaults(func=cmd_migrate)

    reg = sub.add_parser("registry", help="care teams, patients, devices and care plans")
    reg_sub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    apply = reg_sub.add_parser(
        "apply",
        help="load a YAML/JSON registry description (idempotent)",
        description="Load care teams, clinicians, patients, devices, bindings and care plans "
        "from FILE. Applying the same file twice changes nothing; a care-plan version is "
        "history and cannot be changed, only superseded. Example: deploy/registry-example.yaml",
    )
    apply.add_argument("file", help="YAML or JSON registry description")
    db_option(apply)
    apply.set_defaults(func=cmd_registry_apply)

    tok = sub.add_parser("token", help="clinician API tokens")
    tok_sub = tok.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = tok_sub.add_parser("issue", help="create an API token for a clinician (shown once)")
    issue.add_argument("clinician", help="clinician id from the registry")
    issue.add_argument("--label", default="", help="what the token is for")
    db_option(issue)
    issue.set_defaults(func=cmd_token_issue)

    pay = sub.add_parser("payload", help="the gateway payload contract, offline")
    pay_sub = pay.add_subparsers(dest="payload_command", required=True, metavar="ACTION")
    check = pay_sub.add_parser(
        "check",
        help="validate a payload and print its readings or every reason it fails",
        description="Decode and validate a payload exactly as the worker would (without the "
        "registry): print the normalised readings, or every reason a reading would be "
        "quarantined. Exit 0 when everything is accepted, 1 otherwise.",
    )
    check.add_argument("file", help="payload file, or - for standard input")
    check.add_argument(
        "--format",
        choices=["json", "fhir", "ble"],
        default="json",
        help="the format the topic would name (default: json)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=cmd_payload_check)
    schema = pay_sub.add_parser(
        "schema",
        help="print the JSON Schema of a payload format",
        description="Print the JSON Schema of the native payload (the default) or of the "
        "Bluetooth gateway envelope. FHIR payloads follow the FHIR R4 Observation schema.",
    )
    schema.add_argument("--format", choices=["json", "ble"], default="json")
    schema.set_defaults(func=cmd_payload_schema)

    sim = sub.add_parser(
        "simulate",
        help="run simulated patients' gateways against any broker",
        description="Simulated patients (stable, heart-failure decompensation, hypertensive "
        "crisis, COPD exacerbation, and device faults) publish through store-and-forward "
        "gateways. First write and apply their registry: 'homemonitor simulate "
        "--write-registry clinic.yaml' then 'homemonitor registry apply clinic.yaml'; use the "
        "same --patients, --seed and --days for both steps.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="broker host (127.0.0.1)")
    sim.add_argument("--port", type=int, default=1883, help="broker port (1883)")
    sim.add_argument("--tls-ca", help="CA file: connect with TLS")
    sim.add_argument("--patients", type=int, default=50, help="simulated patients (50)")
    sim.add_argument("--seed", type=int, default=7, help="scenario seed (7)")
    sim.add_argument("--days", type=float, default=4.0, help="days to replay, ending now (4)")
    sim.add_argument(
        "--speed",
        type=float,
        default=720.0,
        help="simulated seconds per real second; 0 = as fast as possible (720)",
    )
    sim.add_argument("--queue-dir", help="where gateways keep unsent readings (a temp dir)")
    sim.add_argument(
        "--write-registry",
        metavar="FILE",
        help="write the simulated clinic's registry to FILE and exit",
    )
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo",
        help="everything on embedded defaults: broker, database, simulated clinic",
        description="Start a private Mosquitto and PostgreSQL, load a demo clinic, run the "
        "service and simulated patients, and show alerts as they open. Ctrl-C ends it "
        "with a summary.",
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    demo.add_argument("--patients", type=int, default=50, help="simulated patients (50)")
    demo.add_argument("--seed", type=int, default=7, help="scenario seed (7)")
    demo.add_argument(
        "--speed",
        type=float,
        default=None,
        help="simulated seconds per real second (default: the replay of "
        "--days fills about 70%% of --duration, or 100 s)",
    )
    demo.add_argument(
        "--days",
        type=float,
        default=4.0,
        help="days of home readings to replay, ending now (4; at most 6)",
    )
    demo.add_argument("--port", type=int, default=8080, help="API port (8080)")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON only")
    demo.set_defaults(func=cmd_demo)
    from homemonitor import bench  # noqa: PLC0415

    ben = sub.add_parser(
        "bench",
        help="throughput and latency of the real worker, against baselines",
        description=(bench.__doc__ or "").split("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_arguments(ben)
    ben.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except HomemonitorError as exc:
        print(f"homemonitor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
