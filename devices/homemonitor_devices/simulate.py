"""A simulated clinic: the registry it needs, and its patients' gateways publishing.

:func:`demo_clinic` describes a small primary-care clinic (care teams, clinicians,
devices, one gateway per home paired with the home's devices, patients with care plans)
in the format ``homemonitor registry apply`` loads, together with each patient's
scenario. :func:`run_simulation` plays the patients' measurements through real
:class:`~homemonitor_devices.gateway.Gateway` s against any broker, on a simulated clock.

    >>> registry, assignments = demo_clinic(50, seed=7)
    >>> len(registry["patients"]), len(assignments.patients)
    (50, 50)
    >>> speedup = assignments.speedup_for(timedelta(minutes=5))  # six days in five minutes
    >>> speedup
    1728.0
    >>> summary = await run_simulation(  # needs a broker  # doctest: +SKIP
    ...     assignments, port=1883, queue_dir=Path("q"), speedup=speedup
    ... )
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from homemonitor.contract.protocol import PayloadFormat
from homemonitor.errors import ConfigurationError, HomemonitorError
from homemonitor.runtime import Backoff
from homemonitor_devices.clock import SimClock
from homemonitor_devices.gateway import Gateway, GatewayError, TlsConfig
from homemonitor_devices.measurement import DeviceKind
from homemonitor_devices.physiology import Baseline
from homemonitor_devices.scenarios import (
    Binding,
    Course,
    Fault,
    PatientPlan,
    Publication,
    copd_exacerbation,
    heart_failure_decompensation,
    hypertensive_crisis,
    run_patient,
    stable,
)

__all__ = [
    "COPD",
    "HEART_FAILURE",
    "HYPERTENSION",
    "SILENT_PATIENT_EXPECTS",
    "Assignments",
    "ProgressLine",
    "SimulationError",
    "SimulationSummary",
    "baseline_for",
    "demo_clinic",
    "device_kinds_for",
    "read_passwords",
    "run_simulation",
    "thresholds_for",
]

_DAY = timedelta(days=1)
_PROGRESS_WIDTH = 96

HEART_FAILURE = "heart_failure"
HYPERTENSION = "hypertension"
COPD = "copd"

_TEAMS = (
    ("vc-nacka", "Vårdcentral Nacka", "nacka"),
    ("vc-solna", "Vårdcentral Solna", "solna"),
    ("vc-haninge", "Vårdcentral Haninge", "haninge"),
)
_STAFF = (
    (1, "Distriktssköterska 1", "nurse"),
    (2, "Distriktssköterska 2", "nurse"),
    (3, "Läkare 1", "physician"),
)
#: Every vårdcentral's hours and escalation (docs/alerts.md): weekdays 08-17, then the
#: regional on-call team; urgent alerts go to the team after 15 min, on call after 30.
_ROUTING: dict[str, Any] = {
    "working_hours": {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "08:00",
        "end": "17:00",
    },
    "out_of_hours": "jour-stockholm",
    "escalation": {
        "urgent": [
            {"after_minutes": 15, "to": "team"},
            {"after_minutes": 30, "to": "out_of_hours"},
        ],
        "warning": [{"after_minutes": 240, "to": "team"}],
    },
}
#: The regional on-call (jour) team that takes the alerts while the vårdcentraler are closed.
_ON_CALL: dict[str, Any] = {
    "id": "jour-stockholm",
    "name": "Jourcentral Stockholm",
    "clinicians": [
        {
            "id": "cl-jour-1",
            "name": "Joursjuksköterska 1",
            "role": "nurse",
            "email": "cl-jour-1@jour.example.org",
        },
        {
            "id": "cl-jour-2",
            "name": "Jourläkare 1",
            "role": "physician",
            "email": "cl-jour-2@jour.example.org",
        },
    ],
}
#: (share of patients, share of those who deteriorate during the run)
_FORMATS = {PayloadFormat.NATIVE: 0.6, PayloadFormat.FHIR: 0.2, PayloadFormat.BLE: 0.2}
_MIX = {HEART_FAILURE: (0.40, 0.30), HYPERTENSION: (0.35, 0.25), COPD: (0.25, 0.30)}


@dataclasses.dataclass(frozen=True, slots=True)
class Assignments:
    """Who is simulated how: the run's window, its seed, and one plan per patient."""

    start: datetime
    end: datetime
    seed: int | str
    patients: tuple[PatientPlan, ...]

    def speedup_for(self, real: timedelta) -> float:
        """The speed-up that replays the whole window in ``real`` time."""
        return SimClock.speedup_for(self.end - self.start, real)

    def publications(self) -> Iterator[Publication]:
        """Every patient's messages merged by publish time (ties: patient order)."""
        runs = [
            run_patient(plan, start=self.start, end=self.end, seed=self.seed)
            for plan in self.patients
        ]
        return heapq.merge(*runs, key=lambda p: p.publish_at)

    def scenarios(self) -> dict[str, str]:
        """Patient id -> scenario name."""
        return {plan.patient_id: plan.scenario for plan in self.patients}


# --- the clinic -----------------------------------------------------------------------------
def _iso_z(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def baseline_for(condition: str, rng: random.Random) -> Baseline:
    """A patient's usual values, drawn for ``condition`` (ranges typical of each)."""

    def pick(low: float, high: float, digits: int = 0) -> float:
        return round(rng.uniform(low, high), digits)

    if condition == HEART_FAILURE:
        return Baseline(pick(112, 132), pick(64, 76), pick(66, 78), pick(62, 104, 1), pick(95, 97))
    if condition == HYPERTENSION:
        return Baseline(pick(130, 142), pick(78, 85), pick(62, 76), pick(68, 102, 1), pick(96, 98))
    return Baseline(pick(122, 138), pick(72, 82), pick(74, 86), pick(55, 88, 1), pick(93, 95))


def thresholds_for(condition: str, baseline: Baseline, kinds: set[DeviceKind]) -> dict[str, Any]:
    """Absolute bounds for the quantities the patient's devices measure: the older plan form.

    The evaluation's ``thresholds only`` reference row (the demo clinic's plans use the
    condition templates instead): for heart failure a personal weight ceiling of dry
    weight + 2 kg (warning) and + 3 kg (urgent), fixed bounds for the rest.
    """
    limits: dict[str, Any] = {}
    has_bp = DeviceKind.BLOOD_PRESSURE_CUFF in kinds
    if condition == HEART_FAILURE:
        limits["body_weight"] = {
            "high": {
                "warning": round(baseline.body_weight + 2.0, 1),
                "urgent": round(baseline.body_weight + 3.0, 1),
            }
        }
        limits["spo2"] = {"low": {"warning": 92, "urgent": 88}}
        if has_bp:
            limits["systolic"] = {
                "high": {"warning": 160, "urgent": 180},
                "low": {"warning": 95, "urgent": 85},
            }
        limits["heart_rate"] = {
            "high": {"warning": 110, "urgent": 130},
            "low": {"warning": 50, "urgent": 40},
        }
    elif condition == HYPERTENSION:
        limits["systolic"] = {
            "high": {"warning": 160, "urgent": 180},
            "low": {"warning": 100, "urgent": 90},
        }
        limits["diastolic"] = {"high": {"warning": 100, "urgent": 110}}
        limits["heart_rate"] = {"high": {"warning": 110, "urgent": 130}}
    else:
        limits["spo2"] = {"low": {"warning": 90, "urgent": 88}}
        limits["heart_rate"] = {"high": {"warning": 110, "urgent": 125}}
        if has_bp:
            limits["systolic"] = {"high": {"warning": 170, "urgent": 190}}
    return limits


def _care_plan(condition: str, baseline: Baseline, kinds: set[DeviceKind]) -> dict[str, Any]:
    """A demo patient's plan: the condition's template, personalised as a clinician would.

    Heart failure: the dry weight is the patient's usual weight, and ``spo2.low`` is
    disabled without a pulse oximeter. COPD: the lowest SpO2 accepted as usual is the
    resting value minus 2 % (two stable-state SDs, as the evaluation sets it).
    """
    if condition == HEART_FAILURE:
        plan: dict[str, Any] = {
            "template": HEART_FAILURE,
            "personal": {"dry_weight": round(baseline.body_weight, 1)},
        }
        if DeviceKind.PULSE_OXIMETER not in kinds:
            plan["disabled"] = ["spo2.low"]
        return plan
    if condition == HYPERTENSION:
        return {"template": HYPERTENSION}
    return {"template": COPD, "personal": {"target_spo2_low": round(baseline.spo2) - 2}}


def device_kinds_for(condition: str, rng: random.Random) -> list[DeviceKind]:
    """1-3 devices per home, chosen for the condition."""
    if condition == HEART_FAILURE:
        kinds = [DeviceKind.SCALE, DeviceKind.BLOOD_PRESSURE_CUFF]
        if rng.random() < 0.6:
            kinds.append(DeviceKind.PULSE_OXIMETER)
    elif condition == HYPERTENSION:
        kinds = [DeviceKind.BLOOD_PRESSURE_CUFF]
        if rng.random() < 0.3:
            kinds.append(DeviceKind.SCALE)
    else:
        kinds = [DeviceKind.PULSE_OXIMETER]
        if rng.random() < 0.4:
            kinds.append(DeviceKind.HEART_RATE_MONITOR)
        if rng.random() < 0.3:
            kinds.append(DeviceKind.BLOOD_PRESSURE_CUFF)
    return kinds


def _course(
    condition: str, baseline: Baseline, start: datetime, days: float, rng: random.Random
) -> Course:
    """A deterioration timed to be under way, and alerting, by the end of the run.

    The vital sign reaches the template's bound at 45-70 % of the run: systolic 184 mmHg
    (``systolic.severe`` from 180), SpO2 88.5 % (``spo2.below_target`` from 1 % below a
    target of the usual SpO2 - 2 %: earlier). Heart failure 20 % of the run earlier (at
    25-50 %, the mean weight dry weight + 2.6 kg, the morning weight about + 2.1 kg):
    ``weight.above_dry`` wants two morning weights, one a day, above dry weight + 2 kg,
    and only readings of the last 24 hours open an alert. The onset may lie before the
    run's start: the patient is then already deteriorating when the replay begins (with
    short runs, that is how a breach still shows).
    """
    fraction = rng.uniform(0.45, 0.7)
    breach = start + _DAY * days * fraction
    if condition == HEART_FAILURE:
        breach -= _DAY * days * 0.2
        rate = rng.uniform(0.3, 0.5)
        onset = breach - _DAY * (2.6 / rate)  # morning weights sit ~0.4 kg below the mean
        return heart_failure_decompensation(
            onset, weight_per_day=round(rate, 2), spo2_after=_DAY * (1.8 / rate)
        )
    if condition == HYPERTENSION:
        rate = rng.uniform(10.0, 14.0)
        onset = breach - _DAY * ((184 - baseline.systolic) / rate)
        return hypertensive_crisis(onset, systolic_per_day=round(rate, 1))
    rate = rng.uniform(1.2, 1.8)
    onset = breach - _DAY * ((baseline.spo2 - 88.5) / rate)
    return copd_exacerbation(onset, spo2_per_day=-round(rate, 2))


def _default_start(days: float) -> datetime:
    """A window ending now (to the minute): replayed readings are never in the future."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - _DAY * days


def demo_clinic(
    n_patients: int = 50,
    seed: int | str = 1,
    *,
    start: datetime | None = None,
    days: float = 6.0,
    formats: Mapping[PayloadFormat, float] | None = None,
) -> tuple[dict[str, Any], Assignments]:
    """The registry of a small clinic and each patient's simulated course.

    ``start`` defaults to ``days`` before now, so a replay at any speed-up ends at (or
    before) the wall clock and no reading looks like it comes from the future; keep
    ``days`` below the service's stale limit (7 days). ``formats`` weighs the gateways'
    payload formats (default: 60 % native JSON, 20 % FHIR, 20 % Bluetooth). Everything
    but the default start is deterministic for ``seed``.
    """
    if n_patients < 1:
        msg = "a clinic needs at least one patient"
        raise ValueError(msg)
    start = start or _default_start(days)
    end = start + _DAY * days
    rng = random.Random(f"{seed}/clinic")
    weights = formats or _FORMATS
    bound_from = (start - timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)

    teams = _TEAMS[: 2 if n_patients < 12 else 3]
    care_teams = [
        {
            "id": team_id,
            "name": name,
            "clinicians": [
                {
                    "id": f"cl-{slug}-{n}",
                    "name": title,
                    "role": role,
                    "email": f"cl-{slug}-{n}@{slug}.example.org",
                }
                for n, title, role in _STAFF
            ],
            **_ROUTING,
        }
        for team_id, name, slug in teams
    ]
    care_teams.append(_ON_CALL)

    conditions = _conditions(n_patients, rng)
    deteriorating = _deteriorating(conditions, rng)
    counters: Counter[DeviceKind] = Counter()
    devices: list[dict[str, Any]] = []
    plans: list[PatientPlan] = []
    fmt_choices, fmt_weights = list(weights), list(weights.values())
    for index, condition in enumerate(conditions):
        patient_id = f"p-{index + 1:04d}"
        gateway_id = f"gw-{index + 1:04d}"
        baseline = baseline_for(condition, rng)
        bindings = []
        for kind in device_kinds_for(condition, rng):
            counters[kind] += 1
            device_id = f"{kind.id_prefix}-{counters[kind]:04d}"
            devices.append({"id": device_id, "kind": kind.value, "model": kind.model})
            bindings.append(Binding(device_id, kind, bound_from))
        course = (
            _course(condition, baseline, start, days, rng) if index in deteriorating else stable()
        )
        fmt = rng.choices(fmt_choices, fmt_weights)[0]
        plans.append(
            PatientPlan(patient_id, gateway_id, condition, course, baseline, tuple(bindings), fmt)
        )
    plans = _with_faults(plans, deteriorating, start, end, rng)
    plans = _one_goes_silent(plans)

    patients = []
    for index, plan in enumerate(plans):
        team_id, _, slug = teams[index % len(teams)]
        contact = f"cl-{slug}-{1 + (index // len(teams)) % 2}"
        kinds = {binding.kind for binding in plan.devices}
        care_plan: dict[str, Any] = {
            "version": 1,
            "changed_by": contact,
            "reason": f"{plan.condition} template",
            **_care_plan(plan.condition, plan.baseline, kinds),
        }
        if Fault.STOPS_MEASURING in plan.faults:
            care_plan["reason"] += "; new to weighing: a day's silence is followed up"
            care_plan["overrides"] = {"missing.body_weight": SILENT_PATIENT_EXPECTS}
        patients.append(
            {
                "id": plan.patient_id,
                "care_team": team_id,
                "care_contact": contact,
                "condition": plan.condition,
                "devices": _spans(plan),
                "care_plan": care_plan,
            }
        )
    registry = {
        "care_teams": care_teams,
        "devices": devices,
        # One gateway per home: it speaks for the home's devices while they are there, so a
        # moved device changes gateway (pairing) and patient (binding) at the same moment.
        "gateways": [{"id": plan.gateway_id, "devices": _spans(plan)} for plan in plans],
        "patients": patients,
    }
    return registry, Assignments(start, end, seed, tuple(plans))


def _spans(plan: PatientPlan) -> list[dict[str, str | None]]:
    """When each of the patient's devices is in the home, as registry bindings or pairings."""
    return [
        {
            "device": binding.device_id,
            "from": _iso_z(binding.valid_from),
            "until": _iso_z(binding.until) if binding.until else None,
        }
        for binding in plan.devices
    ]


def _conditions(n: int, rng: random.Random) -> list[str]:
    counts = {c: round(n * share) for c, (share, _) in _MIX.items()}
    counts[HEART_FAILURE] += n - sum(counts.values())
    conditions = [c for c, k in counts.items() for _ in range(k)]
    rng.shuffle(conditions)
    return conditions


def _deteriorating(conditions: list[str], rng: random.Random) -> set[int]:
    """Indexes of patients whose scenario deteriorates: a share per condition, at least one."""
    chosen: set[int] = set()
    for condition, (_, share) in _MIX.items():
        members = [i for i, c in enumerate(conditions) if c == condition]
        if not members:
            continue
        count = max(1, round(len(members) * share)) if len(members) > 1 else 0
        chosen.update(rng.sample(members, count))
    return chosen


def _with_faults(
    plans: list[PatientPlan],
    deteriorating: set[int],
    start: datetime,
    end: datetime,
    rng: random.Random,
) -> list[PatientPlan]:
    """Give a few patients device faults; clock skew only to stable ones (it hides alerts)."""
    n = len(plans)
    stable_ones = [i for i in range(n) if i not in deteriorating] or list(range(n))
    faults: dict[int, set[Fault]] = {i: set() for i in range(n)}
    per = max(1, n // 25)
    for i in rng.sample(stable_ones, min(per, len(stable_ones))):
        faults[i].add(Fault.CLOCK_SKEW)
    for fault, count in (
        (Fault.DUPLICATE_SENDS, max(1, n // 16)),
        (Fault.OFFLINE_BACKLOG, per),
        (Fault.GARBAGE, per),
    ):
        for i in rng.sample(range(n), min(count, n)):
            faults[i].add(fault)
    plans = [dataclasses.replace(p, faults=frozenset(faults[i])) for i, p in enumerate(plans)]
    if n >= 4:
        plans = _move_a_device(plans, start + (end - start) / 2, rng)
    return plans


#: The plan of the patient who stops weighing halfway (:data:`Fault.STOPS_MEASURING`): daily
#: weights regular after a 2-day run-in, a silence of more than a day alerted. So a replay
#: of 3 days or more ends with the missing-data alert due.
SILENT_PATIENT_EXPECTS: dict[str, float] = {"tolerate_hours": 24, "run_in_days": 2}


def _one_goes_silent(plans: list[PatientPlan]) -> list[PatientPlan]:
    """The first stable heart-failure patient with no fault that hides a silence stops
    weighing halfway (their cuff goes on: the gateway is in contact, the silence theirs)."""
    hiding = {Fault.CLOCK_SKEW, Fault.OFFLINE_BACKLOG, Fault.DEVICE_MOVED}
    for i, plan in enumerate(plans):
        if (
            plan.condition == HEART_FAILURE
            and plan.scenario == "stable"
            and not (plan.faults & hiding)
        ):
            plans[i] = dataclasses.replace(plan, faults=plan.faults | {Fault.STOPS_MEASURING})
            break
    return plans


def _move_a_device(plans: list[PatientPlan], at: datetime, rng: random.Random) -> list[PatientPlan]:
    """Re-bind one device from one patient to another at ``at`` (the ``device_moved`` fault)."""
    calm = [i for i, plan in enumerate(plans) if plan.scenario == "stable"] or list(
        range(len(plans))
    )
    giver = rng.choice(calm)
    taker = rng.choice([i for i in range(len(plans)) if i != giver])
    moved = rng.choice(plans[giver].devices)
    gave = tuple(
        dataclasses.replace(b, until=at) if b.device_id == moved.device_id else b
        for b in plans[giver].devices
    )
    plans[giver] = dataclasses.replace(
        plans[giver], devices=gave, faults=plans[giver].faults | {Fault.DEVICE_MOVED}
    )
    took = (*plans[taker].devices, Binding(moved.device_id, moved.kind, at))
    plans[taker] = dataclasses.replace(
        plans[taker], devices=took, faults=plans[taker].faults | {Fault.DEVICE_MOVED}
    )
    return plans


# --- running it -----------------------------------------------------------------------------
class SimulationError(HomemonitorError):
    """The simulation cannot run: gateways cannot reach, or log in to, the broker."""

    def __init__(self, refused: Sequence[GatewayError], gateways: int) -> None:
        first = refused[0]
        hint = ""
        if "authori" in first.detail.lower() or "password" in first.detail.lower():
            hint = " (each gateway logs in with its gateway id as user name)"
        super().__init__(
            f"{first}{hint}; {len(refused)} of {gateways} gateways could not connect, "
            "nothing was published"
        )
        self.refused = list(refused)
        self.gateways = gateways


def read_passwords(path: Path) -> dict[str, str]:
    """Gateway passwords from ``path``: one ``<gateway id>:<password>`` per line.

    The format ``mosquitto_passwd -U`` turns into a broker password file (on a copy: it
    rewrites the file in place). Blank lines and lines starting with ``#`` are skipped.
    """
    passwords: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        gateway_id, sep, password = line.partition(":")
        if not sep or not gateway_id or not password:
            msg = f"{path}, line {number}: expected '<gateway id>:<password>'"
            raise ConfigurationError(msg)
        passwords[gateway_id] = password
    return passwords


class ProgressLine:
    """A status line on ``stream``, and lines printed above it.

    On a terminal the status is rewritten in place (carriage return and padding, no
    terminal codes), and a line printed meanwhile first blanks it: the two never share a
    row. Anywhere else (a pipe, a file, a CI log) there is no carriage return: the status
    is a plain line, at most one every ``every`` seconds.
    """

    def __init__(
        self, stream: TextIO, *, interactive: bool | None = None, every: float = 10.0
    ) -> None:
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.every = every
        self._shown = ""  # the status now on the terminal's row
        self._written_at = -math.inf

    def status(self, text: str, *, final: bool = False) -> None:
        """Show ``text`` as the status (piped: only if ``every`` has passed, or ``final``)."""
        if self.interactive:
            self.stream.write("\r" + text.ljust(max(_PROGRESS_WIDTH, len(self._shown))))
            self._shown = text
        elif final or time.monotonic() - self._written_at >= self.every:
            self.stream.write(text + "\n")
            self._written_at = time.monotonic()
        self.stream.flush()

    def line(self, text: str) -> None:
        """Print ``text`` on a row of its own, above the status."""
        if self.interactive and self._shown:
            width = max(_PROGRESS_WIDTH, len(self._shown))
            self.stream.write(f"\r{' ' * width}\r{text}\n{self._shown.ljust(width)}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the status row: what is printed next starts on a new one."""
        if self.interactive and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = ""


@dataclasses.dataclass(slots=True)
class SimulationSummary:
    """What a simulation run did."""

    generated: int = 0
    published: int = 0
    queued: int = 0
    duplicates: int = 0
    garbage: int = 0
    elapsed_seconds: float = 0.0
    simulated_until: datetime | None = None
    stopped_early: bool = False
    by_scenario: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Messages acknowledged per real second."""
        return self.published / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


async def run_simulation(
    assignments: Assignments,
    *,
    queue_dir: Path,
    host: str = "127.0.0.1",
    port: int = 1883,
    speedup: float = math.inf,
    tls: TlsConfig | None = None,
    passwords: Mapping[str, str] | None = None,
    stop: asyncio.Event | None = None,
    progress: ProgressLine | None = None,
    progress_interval: float = 0.5,
    drain_grace: float = 10.0,
    backoff: Backoff | None = None,
) -> SimulationSummary:
    """Play ``assignments`` through one gateway per patient home against a broker.

    Each gateway keeps its outbox in ``queue_dir/<gateway id>.sqlite3`` and logs in as its
    gateway id (password from ``passwords``, if given). Messages are handed to the gateways
    at their simulated publish time, ``speedup`` simulated seconds per real second
    (``math.inf``: as fast as the gateways take them). Setting ``stop`` ends the run early.
    At the end the gateways get ``drain_grace`` seconds to empty their queues; what is left
    is counted as ``queued`` and stays on disk. ``progress`` gets one updating status line.
    ``backoff`` is every gateway's reconnect schedule; each draws its jitter from a
    generator of its own, seeded from the assignments' seed.

    Nothing is published unless every gateway's first connection succeeds: a broker that
    refuses them (wrong password, not authorised) or is not there raises
    :class:`SimulationError` instead of a run that quietly queues everything.
    """
    stop = stop or asyncio.Event()
    summary = SimulationSummary()
    clock = SimClock(assignments.start, speedup)
    scenario_of = {p.gateway_id: p.scenario for p in assignments.patients}
    by_scenario: Counter[str] = Counter()
    gateways = {
        plan.gateway_id: Gateway(
            plan.gateway_id,
            queue_path=queue_dir / f"{plan.gateway_id}.sqlite3",
            host=host,
            port=port,
            password=(passwords or {}).get(plan.gateway_id),
            tls=tls,
            backoff=dataclasses.replace(  # jitter of its own, repeatable for the seed
                backoff or Backoff(),
                rng=random.Random(f"{assignments.seed}/{plan.gateway_id}/backoff"),
            ),
            synchronous="NORMAL",
        )
        for plan in assignments.patients
    }
    started = time.monotonic()

    def refresh() -> None:
        summary.elapsed_seconds = time.monotonic() - started
        summary.published = sum(g.stats.published for g in gateways.values())
        summary.queued = sum(g.pending for g in gateways.values())

    async def report() -> None:
        if progress is None:
            return
        while True:
            refresh()
            progress.status(_status(summary, clock.now() if speedup != math.inf else None))
            await asyncio.sleep(progress_interval)

    async with contextlib.AsyncExitStack() as stack:
        for gateway in gateways.values():
            await stack.enter_async_context(gateway)
        await _all_connected(list(gateways.values()))
        async with asyncio.TaskGroup() as tasks:
            reporter = tasks.create_task(report(), name="simulation progress")
            try:
                for publication in assignments.publications():
                    delay = clock.real_delay(publication.publish_at)
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        summary.stopped_early = True
                        break
                    gateway = gateways[publication.gateway_id]
                    await gateway.submit(publication.format, publication.payload)
                    summary.generated += 1
                    summary.simulated_until = publication.publish_at
                    if publication.measurement is None:
                        summary.garbage += 1
                    elif publication.duplicate:
                        summary.duplicates += 1
                    else:
                        by_scenario[scenario_of[publication.gateway_id]] += 1
                drain = [asyncio.wait_for(g.drained(), drain_grace) for g in gateways.values()]
                with contextlib.suppress(TimeoutError):
                    await _first_of(asyncio.gather(*drain), stop)
            finally:
                reporter.cancel()
        for gateway in gateways.values():
            await gateway.close(grace=0)
    refresh()
    summary.by_scenario = dict(by_scenario)
    if progress is not None:
        progress.status(_status(summary, summary.simulated_until), final=True)
        progress.finish()
    return summary


async def _all_connected(gateways: Sequence[Gateway]) -> None:
    """Return once every gateway has connected; raise SimulationError if any could not."""
    outcomes = await asyncio.gather(
        *(g.first_connection() for g in gateways), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, GatewayError)]
    if refused:
        raise SimulationError(refused, len(gateways))
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _first_of(work: asyncio.Future[Any], stop: asyncio.Event) -> None:
    """Wait for ``work`` unless ``stop`` is set first (then cancel it)."""
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (work, stopped):
            future.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)


def _status(summary: SimulationSummary, sim_now: datetime | None) -> str:
    """The simulation's status line."""
    elapsed = int(summary.elapsed_seconds)
    line = (
        f"sent {summary.published:>7}  queued {summary.queued:>5}  "
        f"elapsed {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}  "
        f"{summary.rate:7.1f} msg/s"
    )
    if sim_now is not None:
        line += f"  simulated {sim_now.astimezone(UTC):%Y-%m-%d %H:%M}Z"
    return line
