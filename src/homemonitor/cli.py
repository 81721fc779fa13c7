"""The ``homemonitor`` command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from homemonitor import __version__, logs
from homemonitor.errors import HomemonitorError
from homemonitor.settings import PostgresURL, Settings

if TYPE_CHECKING:
    import asyncpg

    from homemonitor.access_actions import AccessAction
    from homemonitor.contract.readings import Reading, Rejection

EPILOG = """\
Configuration comes from HOMEMONITOR_* environment variables (see README, 'Configuration').
Start with 'homemonitor demo': it needs nothing configured."""


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    return Settings(**overrides)


def _dsn(args: argparse.Namespace) -> str:
    settings = _settings(args)
    if settings.database_url is None:
        msg = "no database: pass --database-url or set HOMEMONITOR_DATABASE_URL"
        raise HomemonitorError(msg)
    return settings.database_url.get_secret_value()


async def _pool(args: argparse.Namespace) -> asyncpg.Pool[asyncpg.Record]:
    """A one-connection pool to the user's database; if it cannot connect, say where and why."""
    import asyncpg  # noqa: PLC0415 - keep 'payload check' light

    from homemonitor.storage import database  # noqa: PLC0415

    dsn = _dsn(args)
    try:
        return await database.create_pool(dsn, max_size=1)
    except (OSError, asyncpg.PostgresError, asyncpg.ClientConfigurationError) as exc:
        where = PostgresURL.parse(dsn).where  # never the password
        msg = f"cannot connect to the database {where}: {exc}"
        raise HomemonitorError(msg) from exc


def _run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, object]]) -> object:
    async def runner() -> object:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


#: At most one full garbage collection per this many of generation 1 (CPython: 10). A
#: batch's objects live through dozens of young collections, so they reach the oldest
#: generation and CPython ran a full collection every second or so at 5 000 readings/s,
#: each 50-90 ms, finding nothing: the worst stalls of the bench's latency phase. This
#: makes it one every few tens of seconds of that load (README, *Performance*).
FULL_COLLECTION_EVERY = 1000


def cmd_run(args: argparse.Namespace) -> int:
    from homemonitor.app import serve  # noqa: PLC0415 - keep 'payload check' light

    settings = _settings(args)
    logs.configure(settings.log_format, settings.log_level)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
    _run_until_signal(lambda stop: serve(settings, stop, http=not args.no_http))
    return 0


def cmd_leave(args: argparse.Namespace) -> int:
    from homemonitor.app import require  # noqa: PLC0415 - keep 'payload check' light
    from homemonitor.ingest.worker import Worker  # noqa: PLC0415
    from homemonitor.metrics import Metrics  # noqa: PLC0415
    from homemonitor.runtime import Health  # noqa: PLC0415
    from homemonitor.storage import database  # noqa: PLC0415

    settings = _settings(args)
    if args.client_id:
        settings = settings.model_copy(update={"mqtt_client_id": args.client_id})
    dsn = require(settings)
    logs.configure(settings.log_format, settings.log_level)

    async def main(stop: asyncio.Event) -> tuple[bool, Worker]:
        pool = await database.create_pool(dsn, min_size=0, max_size=4)
        async with pool:
            worker = Worker(settings, pool, Metrics(), Health())
            return await worker.leave(stop, args.idle), worker

    result = _run_until_signal(main)
    assert isinstance(result, tuple)
    ended, worker = result
    totals = worker.totals
    what = "ended" if ended else "KEPT (run again once the database and broker are up)"
    print(
        f"session {settings.mqtt_client_id} {what}: {totals.stored} readings stored, "
        f"{totals.duplicates} duplicates, {totals.quarantined} quarantined"
    )
    return 0 if ended else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    from homemonitor.storage import database  # noqa: PLC0415

    async def main() -> None:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            mode = await database.migrate(conn, retention=_settings(args).retention)
        print(f"database is up to date; storage mode: {mode}")

    asyncio.run(main())
    return 0


def cmd_registry_apply(args: argparse.Namespace) -> int:
    from homemonitor import registry  # noqa: PLC0415
    from homemonitor.storage import database  # noqa: PLC0415

    reg = registry.load_file(Path(args.file))

    async def main() -> registry.ApplySummary:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            await database.migrate(conn, retention=_settings(args).retention)
            return await registry.apply(conn, reg)

    s = asyncio.run(main())
    print(
        f"applied {args.file}: {s.care_teams} care teams, {s.clinicians} clinicians, "
        f"{s.patients} patients, {s.devices} devices, {s.gateways} gateways, "
        f"{s.pairings} pairings, {s.bindings} bindings, {s.plans_added} new care-plan versions"
    )
    unpaired = registry.unpaired_devices(reg)
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (
            f" and {len(unpaired) - 5} more" if len(unpaired) > 5 else ""
        )
        print(
            f"warning: {len(unpaired)} bound devices are paired with no gateway ({shown}); "
            "their readings are quarantined as foreign_device until a gateway lists them",
            file=sys.stderr,
        )
    return 0


def cmd_registry_check(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from homemonitor.api.access import log_access  # noqa: PLC0415
    from homemonitor.registry import plans  # noqa: PLC0415

    async def main() -> list[plans.NotInForce]:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn, conn.transaction():
            found = await plans.not_in_force(conn)
            named = [n.patient_id for n in found]
            await log_access(conn, None, f"cli:{getpass.getuser()}", named, "check_care_plans")
            return found

    found = asyncio.run(main())
    if not found:
        print("every patient's newest care-plan version resolves against these templates")
        return 0
    for n in found:
        instead = (
            f"version {n.in_force} is in force"
            if n.in_force is not None
            else "NO version resolves: readings are stored, no rule runs"
        )
        print(f"{n.patient_id}: version {n.version} does not resolve ({n.problem}); {instead}")
    print(
        f"{len(found)} patients' newest care plan does not resolve: give each a new version "
        "(the API, the web app's plan editor or registry apply) that does",
        file=sys.stderr,
    )
    return 1


def cmd_token_issue(args: argparse.Namespace) -> int:
    from homemonitor.api import auth  # noqa: PLC0415

    async def main() -> str:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            try:
                return await auth.issue_token(
                    conn, args.clinician, args.label, expires_in=args.expires_in
                )
            except LookupError as exc:
                raise HomemonitorError(str(exc)) from exc

    print(asyncio.run(main()))
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    """One line per token: id, clinician, state, created, expires, label (never the token)."""
    from homemonitor.api import auth  # noqa: PLC0415

    async def main() -> list[auth.TokenInfo]:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            return await auth.list_tokens(conn, args.clinician)

    now = datetime.now(UTC)
    print("id\tclinician\tstate\tcreated\texpires\tlabel")
    for t in asyncio.run(main()):
        state = (
            "revoked"
            if t.revoked_at is not None
            else "expired"
            if t.expires_at is not None and t.expires_at <= now
            else "active"
        )
        expires = "never" if t.expires_at is None else _minute(t.expires_at)
        print(f"{t.id}\t{t.clinician_id}\t{state}\t{_minute(t.created_at)}\t{expires}\t{t.label}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from homemonitor.api import auth  # noqa: PLC0415

    async def main() -> bool:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            return await auth.revoke_token(conn, args.id)

    if not asyncio.run(main()):
        msg = f"no active token with id {args.id} (see 'homemonitor token list')"
        raise HomemonitorError(msg)
    print(f"revoked token {args.id}")
    return 0


def _minute(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _expires_in(text: str) -> timedelta:
    """A --expires-in option: a count and a unit, ``30m``, ``12h``, ``90d`` or ``2w``.

    >>> _expires_in("90d"), _expires_in("12h")
    (datetime.timedelta(days=90), datetime.timedelta(seconds=43200))
    """
    units = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    count, unit = text[:-1], text[-1:]
    if unit not in units or not count.isdigit() or not 0 < int(count) <= 100_000:
        msg = f"{text!r} is not a duration such as 30m, 12h, 90d or 2w"
        raise argparse.ArgumentTypeError(msg)
    return timedelta(**{units[unit]: int(count)})


def _judge_with_registry(
    args: argparse.Namespace, payload: bytes
) -> tuple[list[Reading], list[Rejection]]:
    """The worker's own ``prepare`` on a registry file: topic, size, decoding, registry."""
    from homemonitor import registry  # noqa: PLC0415 - only with --registry
    from homemonitor.contract.protocol import PayloadFormat, readings_topic  # noqa: PLC0415
    from homemonitor.ingest import pipeline  # noqa: PLC0415 - only with --registry
    from homemonitor.ingest.validation import ClockPolicy  # noqa: PLC0415

    if not args.gateway:
        msg = "--registry needs --gateway: the gateway that would publish this payload"
        raise HomemonitorError(msg)
    cache = registry.RegistryCache.from_description(registry.load_file(Path(args.registry)))
    now = datetime.now(UTC)
    topic = readings_topic(args.gateway, PayloadFormat(args.format))
    settings = _settings(args)
    clock = ClockPolicy.from_settings(settings)
    batch = pipeline.prepare(
        [pipeline.Inbound(topic, payload, now, 0.0)], cache, clock, settings.max_payload_bytes, now
    )
    return [c.reading for c in batch.candidates], [q.rejection for q in batch.quarantined]


def cmd_payload_check(args: argparse.Namespace) -> int:
    from homemonitor.contract.protocol import PayloadFormat  # noqa: PLC0415
    from homemonitor.decoding import decode  # noqa: PLC0415
    from homemonitor.ingest.validation import ClockPolicy, validate  # noqa: PLC0415

    payload = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    if args.registry:
        accepted, refused = _judge_with_registry(args, payload)
    elif args.gateway:
        msg = "--gateway needs --registry: the registry file to check its pairings in"
        raise HomemonitorError(msg)
    else:
        decoded = decode(PayloadFormat(args.format), payload)
        clock = ClockPolicy.from_settings(_settings(args))
        accepted, implausible = validate(decoded.readings, datetime.now(UTC), clock)
        refused = decoded.rejections + implausible
    rejections = sorted(refused, key=lambda r: -1 if r.index is None else r.index)
    readings: list[dict[str, Any]] = [
        {
            "index": r.index,
            "device_id": r.device_id,
            "metric": r.metric.value,
            "measured_at": r.measured_at.astimezone(UTC).isoformat(),
            "values": {q.value: round(v, 3) for q, v in r.values.items()},
            "units": {q.value: q.unit for q in r.values},
            "flags": [f.value for f in r.flags],
            "quality": sorted(q.value for q in r.quality),
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
            if r["quality"]:
                flags += f"  DEVICE NOTED: {', '.join(r['quality'])}"
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
        from homemonitor.contract.protocol import json_schema  # noqa: PLC0415

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
            escalate_after=args.escalate_after,
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
    from homemonitor_devices.simulate import (  # noqa: PLC0415
        ProgressLine,
        SimulationSummary,
        demo_clinic,
        run_simulation,
    )

    reg, assignments = demo_clinic(args.patients, args.seed, days=args.days)
    gateway_ids = [plan.gateway_id for plan in assignments.patients]
    if args.write_registry or args.write_passwords:
        if args.write_registry:
            Path(args.write_registry).write_text(
                yaml.safe_dump(reg, allow_unicode=True, sort_keys=False), encoding="utf-8"
            )
            print(
                f"wrote the registry of {len(reg['patients'])} simulated patients to "
                f"{args.write_registry}; apply it with 'homemonitor registry apply "
                f"{args.write_registry}' before simulating"
            )
        if args.write_passwords:
            _write_passwords(Path(args.write_passwords), gateway_ids)
        return 0
    passwords = _gateway_passwords(args, gateway_ids)
    logs.configure("text", "ERROR")  # reconnects show in the progress line's queue count
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
            passwords=passwords,
            stop=stop,
            progress=ProgressLine(sys.stderr),
        )
    )
    assert isinstance(summary, SimulationSummary)
    print(
        f"{summary.published} messages published ({summary.duplicates} deliberate "
        f"duplicates, {summary.garbage} garbage); gateway queues in {queue_dir}"
    )
    if summary.queued and not summary.stopped_early:
        print(
            f"homemonitor: {summary.queued} messages were not acknowledged by the broker and "
            f"stay queued in {queue_dir}",
            file=sys.stderr,
        )
        return 1
    return 0


def _gateway_passwords(
    args: argparse.Namespace, gateway_ids: Sequence[str]
) -> dict[str, str] | None:
    """Each simulated gateway's broker password: from --password-file, or --password."""
    from homemonitor_devices.simulate import read_passwords  # noqa: PLC0415

    if args.password_file:
        passwords = read_passwords(Path(args.password_file))
        missing = [g for g in gateway_ids if g not in passwords]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            msg = f"{args.password_file} has no password for gateway {missing[0]}{more}"
            raise HomemonitorError(msg)
        return passwords
    if args.password is not None:
        return dict.fromkeys(gateway_ids, args.password)
    return None


def _write_passwords(path: Path, gateway_ids: Sequence[str]) -> None:
    """A new random password per gateway, as ``<gateway id>:<password>`` lines (mode 0600)."""
    import secrets  # noqa: PLC0415

    lines = "".join(f"{g}:{secrets.token_hex(16)}\n" for g in gateway_ids)
    with path.open("x", encoding="utf-8") as out:  # never replace passwords a broker has
        path.chmod(0o600)
        out.write(lines)
    print(
        f"wrote a password for each of {len(gateway_ids)} simulated gateways to {path}; give "
        f"the broker their users with 'cp {path} gw.passwd && mosquitto_passwd -U gw.passwd' "
        f"and append gw.passwd to its password file, then simulate with --password-file {path}"
    )


def _aware(text: str) -> datetime:
    """An ISO 8601 time for an option; without a zone it is UTC (a date alone: midnight)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not an ISO 8601 time such as 2026-12-01 or 2026-12-01T08:00+01:00"
        raise argparse.ArgumentTypeError(msg) from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _days(text: str) -> int:
    """A --days option: a whole number of days from 1 to 366."""
    if not text.isdigit() or not 1 <= int(text) <= 366:
        msg = f"{text!r} is not a whole number of days from 1 to 366"
        raise argparse.ArgumentTypeError(msg)
    return int(text)


def _quarantine_filter(args: argparse.Namespace) -> Any:
    from homemonitor.ingest import quarantine  # noqa: PLC0415

    return quarantine.Filter(
        ids=getattr(args, "ids", None) or (),
        reason=args.reason,
        gateway_id=args.gateway,
        since=args.since,
        until=args.until,
        pending=getattr(args, "pending", False),
    )


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    def text(value: Any) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat(timespec="seconds")
        return "" if value is None else str(value)

    cells = [[text(r[c]) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=lambda v: v.isoformat())


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from homemonitor.ingest import quarantine  # noqa: PLC0415

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            which = _quarantine_filter(args)
            return await quarantine.counts(conn, which), await quarantine.rows(
                conn, which, limit=args.limit
            )

    by_reason, rows = asyncio.run(main())
    if args.json:
        print(_as_json(rows))
        return 0
    if not rows:
        print("nothing in quarantine matches")
        return 0
    total = sum(int(r["rows"]) for r in by_reason)
    print(f"{total} rows match: " + ", ".join(f"{r['reason']} {r['rows']}" for r in by_reason))
    if total > len(rows):
        print(f"newest {len(rows)} (--limit to see more):")
    _print_table(
        rows,
        ("id", "received_at", "reason", "gateway_id", "device_id", "item_index", "replay_outcome"),
    )
    return 0


def cmd_quarantine_show(args: argparse.Namespace) -> int:
    from homemonitor.ingest import quarantine  # noqa: PLC0415

    async def main() -> tuple[list[dict[str, Any]], tuple[str, bytes] | None]:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            found = await quarantine.rows(conn, quarantine.Filter(ids=[args.id]), limit=1)
            raw = await quarantine.payload(conn, args.id) if args.payload and found else None
            return found, raw

    found, raw = asyncio.run(main())
    if not found:
        raise HomemonitorError(f"no quarantine row {args.id}")
    row = found[0]
    if args.json:
        if raw is not None:
            row["payload"] = raw[1].decode("utf-8", errors="backslashreplace")
        print(_as_json([row]))
        return 0
    for key, value in row.items():
        print(f"{key:>15}: {'' if value is None else value}")
    if raw is not None:
        print("        payload:")
        print(raw[1].decode("utf-8", errors="backslashreplace"))
    return 0


def cmd_quarantine_replay(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from homemonitor.ingest import quarantine  # noqa: PLC0415
    from homemonitor.ingest.validation import ClockPolicy  # noqa: PLC0415

    which = _quarantine_filter(args)
    if not (which.ids or which.reason or which.gateway_id or which.since or which.until):
        msg = "say what to replay: ids, or --reason, --gateway, --since or --until"
        raise HomemonitorError(msg)
    settings = _settings(args)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total or done % 100 == 0:
            end = "\n" if done == total else "\r"
            print(f"replayed {done}/{total} messages", end=end, file=sys.stderr, flush=True)

    async def main() -> quarantine.ReplaySummary:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            return await quarantine.replay(
                conn,
                which,
                by=f"cli:{getpass.getuser()}",
                clock=ClockPolicy.from_settings(settings),
                max_payload_bytes=settings.max_payload_bytes,
                progress=progress,
            )

    s = asyncio.run(main())
    refused = ", ".join(f"{reason} {n}" for reason, n in s.still_refused.most_common())
    print(
        f"replayed {s.messages} messages ({s.rows} quarantine rows): {s.stored} readings "
        f"stored, {s.already_stored} already stored, "
        f"{sum(s.still_refused.values())} rows still refused"
        + (f" ({refused})" if refused else "")
        + (f"; alerts opened: {dict(s.opened)}" if s.opened else "")
    )
    return 0


def _dead_letter_filter(args: argparse.Namespace) -> Any:
    from homemonitor.notify import outbox  # noqa: PLC0415

    return outbox.Filter(
        ids=getattr(args, "ids", None) or (), care_team_id=args.team, channel=args.channel
    )


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    from homemonitor.notify import outbox  # noqa: PLC0415

    async def main() -> list[dict[str, Any]]:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            return await outbox.dead_letters(conn, _dead_letter_filter(args), limit=args.limit)

    rows = asyncio.run(main())
    if args.json:
        print(_as_json(rows))
    elif not rows:
        print("no dead letters match")
    else:
        print(f"{len(rows)} dead letters (oldest first; replay them once the cause is fixed):")
        _print_table(
            rows,
            (
                *("id", "created_at", "care_team_id", "channel", "kind", "alert_id"),
                *("attempts", "last_error", "last_error_at", "replays"),
            ),
        )
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from homemonitor.notify import outbox  # noqa: PLC0415

    which = _dead_letter_filter(args)
    if not (which.ids or which.care_team_id or which.channel or args.all):
        msg = "say what to replay: ids, --team, --channel, or --all"
        raise HomemonitorError(msg)

    async def main() -> int:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            return await outbox.replay(conn, which, by=f"cli:{getpass.getuser()}")

    n = asyncio.run(main())
    print(
        f"{n} dead letters queued again; the notifier delivers them with their old idempotency keys"
    )
    return 0


def _proposal(args: argparse.Namespace) -> Any:
    """The proposed plan of ``rules backtest``, checked before any patient is read."""
    from homemonitor.registry import plans  # noqa: PLC0415
    from homemonitor.rules import backtest, templates  # noqa: PLC0415
    from homemonitor.rules.plan import CarePlanSpec, resolve  # noqa: PLC0415

    if args.plan is not None:
        if args.personal:
            msg = "--personal goes with --template; a plan file sets its own personal values"
            raise HomemonitorError(msg)
        path = Path(args.plan)
        spec = backtest.parse_spec(path.read_text(encoding="utf-8"), str(path))
        plans.resolved(spec, 1)  # the same plan for everyone: wrong for everyone
        return backtest.Proposal(spec=spec)
    if args.template not in templates.TEMPLATES:
        resolve(CarePlanSpec(template=args.template), 1, templates.TEMPLATES)
    return backtest.Proposal(
        template=args.template, personal=backtest.parse_personal(args.personal)
    )


def cmd_rules_backtest(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from homemonitor.api.access import log_access, log_denied  # noqa: PLC0415
    from homemonitor.rules import backtest  # noqa: PLC0415
    from homemonitor.storage import backtest as stored  # noqa: PLC0415

    proposal = _proposal(args)
    action: AccessAction = "rules_backtest"

    def progress(done: int, total: int) -> None:
        end = "\n" if done == total else "\r"
        print(f"backtest: {done}/{total} patients", end=end, file=sys.stderr, flush=True)

    async def main() -> backtest.ReportOut:
        pool = await _pool(args)
        async with pool, pool.acquire() as conn:
            who = f"cli:{getpass.getuser()}"
            team_of_who = None
            if args.as_clinician is not None:
                team_of_who = await conn.fetchval(
                    "SELECT care_team_id FROM clinicians WHERE id = $1", args.as_clinician
                )
                if team_of_who is None:
                    raise stored.UnknownError(f"no clinician {args.as_clinician!r}")
                who = args.as_clinician
            if args.team is not None:
                ids = await stored.team_patients(conn, args.team)
                if team_of_who not in (None, args.team):
                    await log_denied(conn, who, None, action, args.team)
                    msg = f"care team {args.team!r} is not {who}'s (the attempt is logged)"
                    raise HomemonitorError(msg)
            else:
                ids = list(dict.fromkeys(args.patient))
                teams = await stored.patient_teams(conn, ids)
                foreign = [p for p in ids if team_of_who not in (None, teams[p])]
                for p in foreign:
                    await log_denied(conn, who, p, action, p)
                if foreign:
                    msg = f"patient {foreign[0]!r} is not in {who}'s care team (logged)"
                    raise HomemonitorError(msg)

            async def before_read(chunk: Sequence[str]) -> None:
                await log_access(conn, None, who, chunk, action)

            return await stored.run(
                conn,
                ids,
                proposal,
                days=args.days,
                until=datetime.now(UTC),
                before_read=before_read,
                strict=args.team is None,
                progress=progress if args.team is not None else None,
                lang=args.lang,
            )

    report = asyncio.run(main())
    print(backtest.as_json(report) if args.json else backtest.as_text(report, args.lang))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homemonitor",
        description="Home-monitoring telemetry for primary care: MQTT readings in, "
        "care-plan alerts out, nothing lost.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"homemonitor {__version__}")
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

    leave = sub.add_parser(
        "leave",
        help="scale down: store what a departed worker's broker session holds, then end it",
        description="Connect as a worker that is gone for good (its client id), stop its "
        "subscriptions, store and acknowledge everything its persistent session still "
        "holds, and end the session, so that the broker keeps no share of the readings for "
        "it. Run it after the replica has stopped; the same settings as 'run'. Exit 1 if "
        "messages were left (the session is then kept).",
        epilog=EPILOG,
    )
    leave.add_argument(
        "--client-id",
        help="the departed worker's HOMEMONITOR_MQTT_CLIENT_ID (default: the setting)",
    )
    leave.add_argument(
        "--idle",
        type=float,
        default=2.0,
        help="seconds without a message after which the session is taken as empty (2)",
    )
    leave.set_defaults(func=cmd_leave)

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
    check = reg_sub.add_parser(
        "check",
        help="list patients whose newest care plan no longer resolves (run after an upgrade)",
        description="Resolve every patient's newest care-plan version against the condition "
        "templates this version ships. A template that renamed or removed a rule leaves a "
        "plan that overrides or disables it unresolvable: the worker then runs the newest "
        "version that resolves, or no rule at all. Lists each such patient with the problem "
        "and what is in force. Exit status 0 when every plan resolves, 1 otherwise. Reads "
        "plans only; each patient it names is access-logged (cli:<user>, check_care_plans); "
        "the metric homemonitor_care_plans_not_in_force counts the same.",
    )
    db_option(check)
    check.set_defaults(func=cmd_registry_check)

    tok = sub.add_parser("token", help="clinician API tokens")
    tok_sub = tok.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    issue = tok_sub.add_parser("issue", help="create an API token for a clinician (shown once)")
    issue.add_argument("clinician", help="clinician id from the registry")
    issue.add_argument("--label", default="", help="what the token is for")
    issue.add_argument(
        "--expires-in",
        type=_expires_in,
        metavar="DURATION",
        help="it stops working after this long: 30m, 12h, 90d, 2w (default: until revoked)",
    )
    db_option(issue)
    issue.set_defaults(func=cmd_token_issue)
    listing = tok_sub.add_parser(
        "list", help="every token: id, clinician, active/expired/revoked (never the token)"
    )
    listing.add_argument("--clinician", help="only this clinician's")
    db_option(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = tok_sub.add_parser("revoke", help="stop a token working, by its id (token list)")
    revoke.add_argument("id", type=int, help="the token's id")
    db_option(revoke)
    revoke.set_defaults(func=cmd_token_revoke)

    qua = sub.add_parser("quarantine", help="list, inspect and replay quarantined messages")
    qua_sub = qua.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")

    def quarantine_filter(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reason", help="only this reason (e.g. unknown_device)")
        p.add_argument("--gateway", metavar="ID", help="only what this gateway published")
        p.add_argument(
            "--since", type=_aware, metavar="TIME", help="received at or after (ISO 8601)"
        )
        p.add_argument("--until", type=_aware, metavar="TIME", help="received before (ISO 8601)")
        db_option(p)

    q_list = qua_sub.add_parser(
        "list",
        help="quarantined messages by reason, gateway and time, newest first",
        description="Count the matching quarantine rows by reason and list the newest: id, "
        "arrival, reason, gateway, device, the reading's position in its message and what a "
        "replay made of it. No payloads (see 'show --payload').",
    )
    quarantine_filter(q_list)
    q_list.add_argument("--pending", action="store_true", help="only rows not stored by a replay")
    q_list.add_argument("--limit", type=int, default=50, help="rows to list (50)")
    q_list.add_argument("--json", action="store_true", help="machine-readable output")
    q_list.set_defaults(func=cmd_quarantine_list)
    q_show = qua_sub.add_parser("show", help="one quarantine row in full")
    q_show.add_argument("id", type=int, help="the row's id (from 'list')")
    q_show.add_argument(
        "--payload",
        action="store_true",
        help="also print the raw payload (it holds measured values: only when you need it)",
    )
    q_show.add_argument("--json", action="store_true", help="machine-readable output")
    db_option(q_show)
    q_show.set_defaults(func=cmd_quarantine_show)
    q_replay = qua_sub.add_parser(
        "replay",
        help="send quarantined messages through the pipeline again, once the cause is fixed",
        description="Replay the matching quarantined messages through the whole pipeline "
        "with today's registry: decode, validate, resolve, store once, evaluate the care "
        "plan. Each quarantine row stays and records the replay: 'stored' or the reason it is "
        "still refused. Safe to repeat: a reading is never stored twice. Fix the cause first "
        "(e.g. 'registry apply' with the device or pairing that was missing).",
        epilog="example: homemonitor quarantine replay --reason unknown_device --since 2026-12-01",
    )
    q_replay.add_argument("ids", type=int, nargs="*", help="row ids (or use the filters)")
    quarantine_filter(q_replay)
    q_replay.add_argument(
        "--pending", action="store_true", help="skip rows a replay already stored"
    )
    q_replay.set_defaults(func=cmd_quarantine_replay)

    notif = sub.add_parser("notifications", help="the notification outbox: dead letters")
    notif_sub = notif.add_subparsers(dest="notifications_command", required=True, metavar="WHAT")
    dead = notif_sub.add_parser(
        "dead-letters",
        help="notifications given up on after HOMEMONITOR_NOTIFY_MAX_ATTEMPTS: list, replay",
    )
    dead_sub = dead.add_subparsers(dest="dead_letters_command", required=True, metavar="ACTION")

    def dead_filter(p: argparse.ArgumentParser) -> None:
        p.add_argument("--team", metavar="ID", help="only this care team's")
        p.add_argument(
            "--channel", choices=["webhook", "email", "mqtt", "feedback"], help="only this channel"
        )
        db_option(p)

    d_list = dead_sub.add_parser(
        "list",
        help="dead letters, oldest first",
        description="List the notifications the notifier gave up on: outbox id, team, "
        "channel, the event's kind, the alert, attempts and the last error (a class or an "
        "HTTP status). No content: the alert itself is in the API.",
    )
    dead_filter(d_list)
    d_list.add_argument("--limit", type=int, default=100, help="rows to list (100)")
    d_list.add_argument("--json", action="store_true", help="machine-readable output")
    d_list.set_defaults(func=cmd_dead_letters_list)
    d_replay = dead_sub.add_parser(
        "replay",
        help="deliver dead letters again, once the cause is fixed",
        description="Queue the matching dead letters again from their first attempt. The "
        "running notifier delivers them with the idempotency keys they always had, so a "
        "receiver that did take one after all can ignore it.",
        epilog="example: homemonitor notifications dead-letters replay --team vc-norr "
        "--channel webhook",
    )
    d_replay.add_argument("ids", type=int, nargs="*", help="outbox ids (or use the filters)")
    dead_filter(d_replay)
    d_replay.add_argument("--all", action="store_true", help="every dead letter")
    d_replay.set_defaults(func=cmd_dead_letters_replay)

    rules = sub.add_parser("rules", help="care-plan rules: backtest a plan change")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    bt = rules_sub.add_parser(
        "backtest",
        help="what a proposed plan would have raised on a patient's (or team's) history",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Replay the stored readings of the last --days through each patient's current care plan
and through a proposed one, with the engine the worker runs, and show the alerts each
would have raised (when, severity, rule, why) side by side, with the alerts the database
holds from the period. Nothing is changed; every patient whose history is read is
written to the access log (action rules_backtest, as --as or cli:<your user name>).

The proposal is a care-plan file (YAML or JSON, as the registry's care_plan or the API's
spec), the same for every patient, or --template NAME: each patient's current plan with
the template swapped in (personal values kept, --personal adds or changes them; the old
template's overrides and disabled rules dropped when the template changes; own rules and
thresholds kept, but a bound whose rule id the template has, e.g. systolic.low, gives way
to the template's rule). With --team, a patient whose proposed plan does not resolve (say, no
dry_weight for heart_failure) is listed as skipped.

Limits: the simulated clinician resolves every alert 24 h after it opened, on both
sides; every reading is replayed as if it arrived when it was measured (a gateway's
backlog alerts here as if it were news; clock-flagged readings stay history); the
current plan is the newest version over the whole period, while the stored alerts came
from the versions in force and from real clinicians; readings before the period (the
plans' lookback, at most 90 days) only warm the rules up.""",
        epilog="example: homemonitor rules backtest --patient p-1 --template heart_failure "
        "--personal dry_weight=78.5",
    )
    who = bt.add_mutually_exclusive_group(required=True)
    who.add_argument("--patient", action="extend", nargs="+", metavar="ID", help="patient id(s)")
    who.add_argument("--team", metavar="ID", help="every patient of this care team")
    what = bt.add_mutually_exclusive_group(required=True)
    what.add_argument("--plan", metavar="FILE", help="the proposed care plan (YAML or JSON)")
    what.add_argument("--template", metavar="NAME", help="swap in this condition template")
    bt.add_argument(
        "--personal",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a personal value for --template (repeatable), e.g. dry_weight=78.5",
    )
    bt.add_argument(
        "--days", type=_days, default=90, help="days back from now to replay (90; at most 366)"
    )
    bt.add_argument("--json", action="store_true", help="machine-readable output")
    bt.add_argument(
        "--lang",
        choices=("sv", "en"),
        default="en",
        help="language of the report (en; the alerts' sentences in --json have both)",
    )
    bt.add_argument(
        "--as",
        dest="as_clinician",
        metavar="CLINICIAN",
        help="the clinician asking: only their care team's patients, logged under their id",
    )
    db_option(bt)
    bt.set_defaults(func=cmd_rules_backtest)

    pay = sub.add_parser("payload", help="the gateway payload contract, offline")
    pay_sub = pay.add_subparsers(dest="payload_command", required=True, metavar="ACTION")
    check = pay_sub.add_parser(
        "check",
        help="validate a payload and print its readings or every reason it fails",
        description="Decode and validate a payload exactly as the worker would: print the "
        "normalised readings, or every reason a reading would be quarantined. Without "
        "--registry the registry is not consulted; with --registry FILE and --gateway ID it "
        "is, as if GATEWAY published the payload: an unknown gateway or device, a device not "
        "paired with that gateway or bound to nobody at measured_at are reported too. "
        "Exit 0 when everything is accepted, 1 otherwise.",
    )
    check.add_argument("file", help="payload file, or - for standard input")
    check.add_argument(
        "--format",
        choices=["json", "fhir", "ble"],
        default="json",
        help="the format the topic would name (default: json)",
    )
    check.add_argument(
        "--gateway", metavar="ID", help="the gateway that would publish it (with --registry)"
    )
    check.add_argument(
        "--registry",
        metavar="FILE",
        help="also check gateway, device, pairing and binding against this registry file",
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
        "same --patients, --seed and --days for both steps. A broker that authenticates "
        "gateways (deploy/) knows each as its gateway id with its own password: "
        "--write-passwords makes them, --password-file uses them. A gateway the broker "
        "refuses or cannot reach is an error (exit 2); messages the broker did not take by "
        "the end, exit 1.",
    )
    sim.add_argument("--host", default="127.0.0.1", help="broker host (127.0.0.1)")
    sim.add_argument("--port", type=int, default=1883, help="broker port (1883)")
    sim.add_argument("--tls-ca", help="CA file: connect with TLS")
    sim.add_argument(
        "--password-file",
        metavar="FILE",
        help="broker passwords, one '<gateway id>:<password>' line per gateway (each "
        "gateway logs in with its gateway id as user name, as deploy/mosquitto/acl requires)",
    )
    sim.add_argument(
        "--password",
        help="one broker password for every gateway (visible to other users of this "
        "machine: prefer --password-file)",
    )
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
    sim.add_argument(
        "--write-passwords",
        metavar="FILE",
        help="write a new random password per simulated gateway to FILE (the "
        "--password-file format, which 'mosquitto_passwd -U' hashes) and exit",
    )
    sim.set_defaults(func=cmd_simulate)

    demo = sub.add_parser(
        "demo",
        help="everything on embedded defaults: broker, database, simulated clinic",
        description="Start a private Mosquitto and PostgreSQL, load a demo clinic, run the "
        "service and simulated patients, and show alerts as they open, the notifications "
        "a local webhook receiver and mail catcher get, and escalations. Ctrl-C ends it "
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
    demo.add_argument(
        "--escalate-after",
        type=float,
        default=1.0,
        metavar="MINUTES",
        help="an unacknowledged alert goes to the whole team after MINUTES, an urgent one "
        "to on call after twice as long (1)",
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON only")
    demo.set_defaults(func=cmd_demo)
    return parser


def _mistake(exc: Exception) -> str | None:
    """One line saying what the user got wrong, or None for an error that is a bug.

    The user's mistakes: the project's own errors (they say what to change), a setting
    Settings refuses, and a file the user named that cannot be read.
    """
    if isinstance(exc, HomemonitorError):
        return str(exc)
    if isinstance(exc, ValidationError):
        in_env = exc.title == Settings.__name__
        problems = [
            (
                f"{'HOMEMONITOR_' if in_env else ''}{'.'.join(map(str, e['loc'])).upper()}: "
                if e["loc"]
                else ""  # a check across settings names its variables itself
            )
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors(include_url=False, include_input=False)  # no secret values
        ]
        return f"invalid {'setting' if in_env else exc.title}: " + "; ".join(problems)
    if isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        return f"{exc.filename}: {what}" if exc.filename is not None else what
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        problem = _mistake(exc)
        if problem is None:
            raise
        print(f"homemonitor: {problem}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
