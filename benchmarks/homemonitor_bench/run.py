"""The whole run: the plan of phases against one broker, database and load generator."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from homemonitor import registry
from homemonitor.embedded import PrivateBroker, PrivateMosquitto, PrivateNats, PrivatePostgres
from homemonitor.errors import ServiceStartError
from homemonitor.registry import RegistryCache
from homemonitor.storage import database
from homemonitor_bench import history
from homemonitor_bench.clinic import PlanMode, build_clinic
from homemonitor_bench.consumers import (
    NAIVE_TABLE,
    ChildConsumer,
    Consumer,
    Db,
    ServiceWorkers,
    Verification,
    bare_main,
    forget_session,
    intake_main,
    naive_main,
)
from homemonitor_bench.meter import CpuMeter, machine
from homemonitor_bench.outbox import compare as compare_outbox
from homemonitor_bench.phases import crash, latency, outage
from homemonitor_bench.publisher import LoadConfig, LoadGenerator
from homemonitor_bench.search import Bench, Search
from homemonitor_bench.stages import profile
from homemonitor_bench.stalls import POSTGRES_LOGGING


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """How long each phase runs."""

    step_seconds: float
    max_steps: int
    latency_seconds: tuple[float, float]
    profile_seconds: float
    outage: tuple[float, float, float]  # before, down, after
    patients: int


#: Latency runs last 60 s: long enough to include full garbage collections and periodic work.
FULL = Plan(7.0, 7, (60.0, 60.0), 8.0, (5.0, 60.0, 15.0), patients=10_000)
QUICK = Plan(2.0, 3, (3.0, 2.0), 2.0, (1.5, 5.0, 3.0), patients=2_000)
PHASES = (
    "bare",
    "intake",
    "naive",
    "worker",
    "latency",
    "profile",
    "plans",
    "outbox",
    "scale",
    "outage",
    "nats",
    "crash",
)
#: What runs without --phases: ``nats`` and ``crash`` need nats-server and take minutes more.
DEFAULT_PHASES = PHASES[:-2]
#: The NATS settings the nats and crash phases take from what deploy/ ships.
DEPLOY_NATS = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "nats-server.conf"
#: Readings the crash phase has the broker acknowledge before it kills it.
CRASH_READINGS = 5000


@dataclasses.dataclass(frozen=True, slots=True)
class NatsSettings:
    """What of ``deploy/nats/nats-server.conf`` the bench's NATS runs with."""

    ack_wait_s: float
    max_ack_pending: int
    sync_interval: str | None  # None: not set (NATS before 2.10 does not know the key)
    version: str
    note: str  # why a setting of deploy/ is not used, or ""

    def server(self, directory: Path) -> PrivateNats:
        return PrivateNats(
            directory,
            ack_wait_s=self.ack_wait_s,
            max_ack_pending=self.max_ack_pending,
            sync_interval=self.sync_interval,
        )


def nats_settings(conf: Path = DEPLOY_NATS) -> NatsSettings:
    """deploy/'s ``ack_wait``, ``max_ack_pending`` and ``sync_interval`` for the installed NATS.

    Raises :class:`ServiceStartError` when ``nats-server`` is not installed.
    """
    text = conf.read_text()

    def value(key: str) -> str:
        found = re.search(rf'^\s*{key}:\s*"?([^"\s]+)"?', text, re.MULTILINE)
        if found is None:
            msg = f"{key} not found"
            raise ServiceStartError(str(conf), msg)
        return found[1]

    version = PrivateNats(Path("unused")).version()
    sync: str | None = value("sync_interval")
    note = ""
    if version < (2, 10):
        known = f"nats-server {version[0]}.{version[1]} does not know it"
        note = f"sync_interval {sync} (deploy/) not set: {known}"
        sync = None
    return NatsSettings(
        ack_wait_s=float(value("ack_wait").removesuffix("s")),
        max_ack_pending=int(value("max_ack_pending")),
        sync_interval=sync,
        version=".".join(map(str, version)),
        note=note,
    )


def _mosquitto_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "-h"], capture_output=True, timeout=5, check=False)
        first = out.stdout.decode(errors="replace").splitlines()
        if first:
            return first[0].replace("mosquitto version ", "")
    return "unknown"


async def prepare_database(
    db: Db, patients: int, seed: int, plans: PlanMode = "thresholds"
) -> dict[str, Any]:
    """Migrate, apply the clinic's registry (timed) and create the naive table."""
    conn = await db.conn()
    for setting, value in POSTGRES_LOGGING.items():  # what stalls are matched to
        await conn.execute(f"ALTER SYSTEM SET {setting} = {value}")
    await conn.execute("SELECT pg_reload_conf()")
    await database.migrate(conn)
    clinic = build_clinic(patients, seed, plans)
    t0 = time.perf_counter()
    parsed = registry.parse(clinic.registry)
    t1 = time.perf_counter()
    summary = await registry.apply(conn, parsed)
    t2 = time.perf_counter()
    await conn.execute(NAIVE_TABLE)
    cache = RegistryCache()
    t3, cpu = time.perf_counter(), time.process_time()
    await cache.load(conn)  # what a worker does at start and when the registry changes
    return {
        "plans": plans,
        "patients": summary.patients,
        "devices": summary.devices,
        "care_plans": summary.plans_added,
        "parse_s": t1 - t0,
        "apply_s": t2 - t1,
        "cache_load_s": time.perf_counter() - t3,
        "cache_load_cpu_s": time.process_time() - cpu,
        "cache_max_age_s": getattr(cache, "max_age", None),  # reloaded by age, if it is
    }


async def switch_plans(db: Db, patients: int, seed: int, plans: PlanMode, version: int) -> float:
    """Store ``version`` of every patient's plan in the form ``plans``; seconds it took.

    A worker started afterwards loads the new plans (the bench starts one per form).
    """
    t0 = time.perf_counter()
    clinic = build_clinic(patients, seed, plans, version)
    await registry.apply(await db.conn(), registry.parse(clinic.registry))
    return time.perf_counter() - t0


async def seed_history(db: Db, patients: int, seed: int, base_ms: int, days: int) -> dict[str, Any]:
    """The clinic's stored past (:mod:`homemonitor_bench.history`), as the result records it."""
    devices = build_clinic(patients, seed).devices
    seeded = await history.seed(await db.conn(), devices, base_ms, days)
    return dataclasses.asdict(seeded)


async def run_phases(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every phase of ``args.phases`` in order; the result the report and the JSON hold."""
    plan = QUICK if args.quick else FULL
    patients = args.patients or plan.patients
    phases = set(args.phases.split(",")) if args.phases else set(DEFAULT_PHASES)
    nats: NatsSettings | None = None
    if phases & {"nats", "crash"}:
        try:
            nats = nats_settings()
        except ServiceStartError as exc:
            print(f"phases nats and crash on NATS skipped: {exc}", flush=True)
    if "nats" in phases and nats is not None:
        phases |= {"worker", "latency"}  # its baseline: Mosquitto in the same run
    extra_env = dict(kv.split("=", 1) for kv in args.worker_env)
    base_ms = int((datetime.now(UTC) - timedelta(hours=2)).timestamp()) * 1000
    plans: PlanMode = args.plans
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "plans": plans,
        "machine": machine(),
        "worker_env": extra_env,
        "worker_pythonpath": args.worker_pythonpath,
        "broker_autosave_s": args.broker_autosave,
        "broker_config": args.broker_config,
    }
    if nats is not None:
        result["nats"] = dataclasses.asdict(nats)
    elif phases & {"nats", "crash"}:
        result["nats"] = {"skipped": "nats-server is not installed (apt-get install nats-server)"}
    t_start = time.monotonic()
    print(f"homemonitor bench ({'quick' if args.quick else 'full'}) in {workdir}", flush=True)

    def mosquitto(directory: Path) -> PrivateMosquitto:
        return PrivateMosquitto(
            directory,
            # the last autosave_interval wins: deploy/'s, not the test fixtures' 1 s
            extra_config=(
                "log_type subscribe\nlog_type information\n"
                f"autosave_interval {args.broker_autosave}\n"
                + "".join(f"{line}\n" for line in args.broker_config)
            ),
        )

    def crash_broker(kind: str, directory: Path) -> PrivateBroker:
        return nats.server(directory) if kind == "nats" and nats else mosquitto(directory)

    with (
        PrivatePostgres(workdir / "postgres", durable=not args.no_fsync) as pg,
        mosquitto(workdir / "mosquitto") as mq,
    ):
        db = Db(pg.dsn)
        loads: list[LoadGenerator] = []
        consumers: list[Consumer] = []
        try:
            result["postgres"] = str(await db.fetchval("SHOW server_version"))
            result["postgres_fsync"] = not args.no_fsync
            result["mosquitto"] = _mosquitto_version(mq.binary)
            result["registry"] = await prepare_database(db, patients, args.seed, plans)
            r = result["registry"]
            print(
                f"registry: {r['patients']} patients, {r['devices']} devices, "
                f"{r['care_plans']} care plans, {plans} (parse {r['parse_s']:.1f} s, "
                f"apply {r['apply_s']:.1f} s)",
                flush=True,
            )
            live_since: datetime | None = None  # set while a seeded history is stored

            async def with_history() -> bool:
                """Seed the history unless it is there; whether this call seeded it."""
                nonlocal live_since
                if live_since is not None:
                    return False
                h = await seed_history(db, patients, args.seed, base_ms, args.history_days)
                result["history"] = h
                live_since = datetime.fromtimestamp(base_ms / 1000, UTC)
                print(
                    f"history: {h['rows']} readings seeded, {h['days']} days of "
                    f"{h['readings_per_device_day']:.2f} readings per device a day "
                    f"({h['seconds']:.1f} s)",
                    flush=True,
                )
                return True

            if plans == "templates":
                await with_history()

            async def connect(broker: PrivateBroker) -> LoadGenerator:
                """A load generator publishing to ``broker``."""
                load = LoadGenerator(
                    LoadConfig(broker.host, broker.port, patients, args.seed, base_ms)
                )
                loads.append(load)
                await load.start()
                return load

            async def bench_on(broker: PrivateBroker, after: Bench | None = None) -> Bench:
                """The phases against ``broker`` (numbering readings on from ``after``)."""
                load = await connect(broker)
                on = Bench(
                    db=db,
                    broker=broker,
                    load=load,
                    meter=CpuMeter(load.pid, broker.pid, pg._postmaster_pid()),
                    base_ms=base_ms,
                    devices=r["devices"],
                    workdir=workdir,
                    postgres_log=pg.log_path,
                )
                if after is not None:  # one clock and one numbering for the whole run
                    on.next_seq, on.started = after.next_seq, after.started
                return on

            bench = await bench_on(mq)
            searches: dict[str, Any] = {}
            result["searches"] = searches

            async def searched(
                key: str, consumer: Consumer, start: float, on: Bench | None = None
            ) -> Search:
                on = on or bench
                consumers.append(consumer)
                await consumer.start()
                await on.until_consuming(consumer)
                found = await on.search(consumer, start, plan.step_seconds, plan.max_steps)
                searches[key] = dataclasses.asdict(found)
                return found

            async def retire(consumer: Consumer) -> None:
                await consumer.stop()
                consumers.remove(consumer)
                if isinstance(consumer, ServiceWorkers):
                    for cid in consumer.client_ids:
                        await forget_session(consumer.broker, cid)

            if "bare" in phases:
                bare = ChildConsumer(
                    "bare client (aiomqtt, manual ack)", bare_main, (mq.host, mq.port), None
                )
                await searched("bare", bare, 1000)
                await retire(bare)
            if "intake" in phases:
                alone = ChildConsumer(
                    "the worker's MQTT intake, no work", intake_main, (mq.host, mq.port), None
                )
                await searched("intake", alone, 1000)
                await retire(alone)
            if "naive" in phases:
                naive = ChildConsumer(
                    "naive (auto ack, INSERT each)", naive_main, (mq.host, mq.port, pg.dsn), db
                )
                await searched("naive", naive, 500)
                await retire(naive)

            def workers(
                n: int,
                name: str,
                group: str | None = None,
                label: str | None = None,
                broker: PrivateBroker = mq,
            ) -> ServiceWorkers:
                return ServiceWorkers(
                    n,
                    db,
                    broker,
                    workdir,
                    name=name,
                    shared_group=group,
                    extra_env=extra_env,
                    pythonpath=args.worker_pythonpath,
                    live_since=live_since,
                    label=label,
                )

            one_sustained = 0.0
            if phases & {"worker", "latency", "profile"}:
                one = workers(1, "worker")
                if "worker" in phases:
                    found = await searched("worker", one, 1000)
                    one_sustained = found.best.rate if found.best else 0.0
                else:
                    consumers.append(one)
                    await one.start()
                    await bench.until_consuming(one)
                durations = (args.latency_seconds,) * 2 if args.latency_seconds else None
                latencies = tuple(zip((1000, 5000), durations or plan.latency_seconds, strict=True))
                if "latency" in phases:
                    result["latency"] = [
                        await latency(bench, one, rate, seconds) for rate, seconds in latencies
                    ]
                if "profile" in phases:
                    rate = args.profile_rate or (0.8 * one_sustained if one_sustained else 1000.0)
                    result["profile"] = await profile(
                        bench, one, float(round(rate / 50) * 50), plan.profile_seconds
                    )
                result["worker_quarantined"] = await one.quarantined()
                await retire(one)
            if "nats" in phases and nats is not None:  # right after its Mosquitto baseline
                with nats.server(workdir / "nats") as server:
                    on = await bench_on(server, bench)
                    w = workers(1, "nats", label="one worker, NATS JetStream", broker=server)
                    await searched("worker_nats", w, 1000, on)
                    result["latency_nats"] = [
                        await latency(on, w, rate, seconds) for rate, seconds in latencies
                    ]
                    await retire(w)
                    on.load.close()
            if "plans" in phases:
                seeded_here = await with_history()
                version, modes = 1, {}
                start = max(1000.0, float(round(one_sustained * 0.8 / 50) * 50))
                for mode in ("thresholds", "templates"):
                    # Both searches start from the seeded history alone: the readings of
                    # earlier phases and of the other mode's steps go (between workers,
                    # so no cache is behind the database's back).
                    assert live_since is not None
                    await db.execute(
                        "DELETE FROM readings WHERE measured_at >= $1",
                        datetime.fromtimestamp(base_ms / 1000, UTC),
                    )
                    await db.execute("VACUUM ANALYZE readings")
                    version += 1
                    switched = await switch_plans(db, patients, args.seed, mode, version)
                    w = workers(1, f"plans-{mode}", label=f"one worker, {mode} plans")
                    found = await searched(f"worker_{mode}", w, start)
                    modes[mode] = {
                        "switch_s": switched,
                        "quarantined": await w.quarantined(),
                    }
                    await retire(w)
                    start = 1000.0  # as the worker phase: a far slower mode drains for minutes
                result["plans_phase"] = modes
                version += 1
                await switch_plans(db, patients, args.seed, plans, version)  # as before
                if seeded_here:
                    await db.execute("TRUNCATE readings")
                    live_since = None
            if "outbox" in phases:
                start = max(1000.0, float(round(one_sustained * 0.8 / 50) * 50))
                result["outbox_phase"] = await compare_outbox(
                    bench, searched, retire, workers, start, plan.step_seconds
                )
            if "scale" in phases:
                two = workers(2, "shared", group="bench")
                start = float(round(max(one_sustained, 1000) * 1.2 / 50) * 50)
                await searched("two_workers", two, start)
                await retire(two)
            if "outage" in phases:
                lone = workers(1, "outage")
                consumers.append(lone)
                await lone.start()
                await bench.until_consuming(lone)
                before, down, after = plan.outage
                down = args.outage_seconds or down
                result["outage"] = await outage(
                    bench, lone, pg, rate=1000, before=before, down=down, after=after
                )
                await retire(lone)
            if "crash" in phases:
                kinds = ["mosquitto"] + (["nats"] if nats is not None else [])
                result["crash"] = []
                for kind, running in ((k, r) for k in kinds for r in (False, True)):
                    mode = "running" if running else "away"
                    where = workdir / "crash" / f"{kind}-{mode}"
                    with crash_broker(kind, where) as cb:
                        on = await bench_on(cb, bench)
                        w = workers(1, f"crash-{kind}-{mode}", broker=cb)
                        consumers.append(w)
                        result["crash"].append(
                            await crash(
                                on,
                                w,
                                functools.partial(connect, cb),
                                acknowledged=args.crash_readings,
                                rate=args.crash_rate,
                                worker_running=running,
                                settle_s=(nats.ack_wait_s if nats else 0.0) + 10,
                            )
                        )
                        consumers.remove(w)
                        on.load.close()
        finally:
            for consumer in consumers:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            for load in loads:
                with contextlib.suppress(Exception):
                    load.close()
            await db.close()
    result["duration_s"] = time.monotonic() - t_start
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class Smoke:
    """What the brief run stored and opened."""

    verification: Verification
    alerts_opened: int
    history_rows: int


async def smoke(
    dsn: str,
    broker: PrivateBroker,
    workdir: Path,
    *,
    patients: int = 20,
    readings: int = 1500,
    rate: float = 1000.0,
    plans: PlanMode = "thresholds",
) -> Smoke:
    """The harness end to end, briefly: registry, worker process, load generator, check.

    With ``plans`` ``templates`` the registry references the condition templates and the
    clinic's history is seeded first, as in the bench's ``plans`` phase.
    """
    db = Db(dsn)
    base_ms = int((datetime.now(UTC) - timedelta(hours=2)).timestamp()) * 1000
    load = LoadGenerator(LoadConfig(broker.host, broker.port, patients, 7, base_ms))
    live_since = None
    seeded = 0
    if plans == "templates":
        live_since = datetime.fromtimestamp(base_ms / 1000, UTC)
    worker = ServiceWorkers(1, db, broker, workdir, name="smoke", live_since=live_since)
    try:
        clinic = build_clinic(patients, plans=plans)
        await registry.apply(await db.conn(), registry.parse(clinic.registry))
        if plans == "templates":
            info = await history.seed(
                await db.conn(), clinic.devices, base_ms, history.DEFAULT_DAYS
            )
            seeded = info.rows
        await worker.start()
        await load.start()
        meter = CpuMeter(load.pid, None, None)
        bench = Bench(
            db=db,
            broker=broker,
            load=load,
            meter=meter,
            base_ms=base_ms,
            devices=len(clinic.devices),
            workdir=workdir,
            quiet=True,
        )
        await bench.until_consuming(worker)
        step, _ = await bench.step(worker, rate, readings / rate, quiet=True)
        return Smoke(step.verification, await worker.alerts_opened(), seeded)
    finally:
        await worker.stop()
        load.close()
        await db.close()
