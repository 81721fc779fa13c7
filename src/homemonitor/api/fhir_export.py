"""FHIR Bulk Data ``$export`` jobs for a care team, run in the API process.

A kick-off starts one job: a task that reads the team's readings and alerts in one
repeatable-read transaction (so every file describes the same moment, the manifest's
``transactionTime``), writes one NDJSON file per resource type into a private temporary
folder, and access-logs every patient whose data went into a file (``fhir_export``, one
row per patient) in that same transaction before the job is complete: no row, no file.

Bounded on purpose: at most :data:`MAX_RUNNING` jobs run at once per process (more are
refused with 429), a finished job and its files are kept for :data:`KEEP_S` seconds and
then deleted, and only the clinician who started a job can poll it or fetch its files.
Jobs live in this process's memory: after a restart, or behind a load balancer that sends
the status request to another replica, the job is unknown (404) and is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg

from homemonitor import logs
from homemonitor.api.access import log_access
from homemonitor.api.auth import Clinician
from homemonitor.fhir_out import AlertRecord, ReadingRecord, flag, observation
from homemonitor.metrics import Metrics

log = logs.get_logger(__name__)

MAX_RUNNING = 2
KEEP_S = 3600.0
#: The resource types an export can hold, in the order files are written.
EXPORT_TYPES = ("Observation", "Flag")

_SQL = {
    "Observation": (
        "SELECT r.device_id, r.metric, r.measured_at, r.received_at, r.stored_at, "
        "r.patient_id, r.systolic, r.diastolic, r.mean_arterial, r.heart_rate, "
        "r.body_weight, r.spo2, r.flags, r.quality "
        "FROM readings r JOIN patients p ON p.id = r.patient_id "
        "WHERE p.care_team_id = $1 AND r.stored_at > coalesce($2::timestamptz, '-infinity') "
        "ORDER BY r.patient_id, r.measured_at"
    ),
    "Flag": (
        "SELECT a.*, a.latest_explanation->>'sentence' AS explanation "
        "FROM alerts a JOIN patients p ON p.id = a.patient_id "
        "WHERE p.care_team_id = $1 AND a.updated_at > coalesce($2::timestamptz, '-infinity') "
        "ORDER BY a.id"
    ),
}


def _to_resource(kind: str, row: asyncpg.Record, system: str) -> dict[str, Any] | None:
    if kind == "Observation":
        return observation(ReadingRecord.from_row(row), system)
    return flag(AlertRecord.from_row(row), system)


class TooManyExportsError(Exception):
    """Already :data:`MAX_RUNNING` exports running in this process: try again later."""


@dataclasses.dataclass(slots=True)
class ExportJob:
    """One ``$export`` and what became of it."""

    id: str
    clinician_id: str
    care_team_id: str
    request: str
    types: tuple[str, ...]
    since: datetime | None
    folder: Path
    state: Literal["running", "complete", "failed"] = "running"
    transaction_time: datetime | None = None
    #: Per resource type with at least one resource: its file and how many lines.
    outputs: dict[str, tuple[Path, int]] = dataclasses.field(default_factory=dict)
    finished: float | None = None
    task: asyncio.Task[None] | None = None


class ExportJobs:
    """The export jobs of this process; files in one temporary folder made on first use."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._jobs: dict[str, ExportJob] = {}
        self._root: Path | None = None
        self._clock = clock

    def _folder(self, job_id: str) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="homemonitor-export-"))
            # the folder goes when this object does, or at the latest when the process ends
            weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)
        folder = self._root / job_id
        folder.mkdir(mode=0o700)
        return folder

    def start(
        self,
        pool: asyncpg.Pool,
        metrics: Metrics,
        who: Clinician,
        *,
        types: Sequence[str],
        since: datetime | None,
        request: str,
        patient_system: str,
    ) -> ExportJob:
        """Start exporting ``who``'s care team; :class:`TooManyExportsError` when full."""
        self._purge()
        if sum(job.state == "running" for job in self._jobs.values()) >= MAX_RUNNING:
            raise TooManyExportsError
        job_id = uuid.uuid4().hex
        job = ExportJob(
            id=job_id,
            clinician_id=who.id,
            care_team_id=who.care_team_id,
            request=request,
            types=tuple(t for t in EXPORT_TYPES if t in types),
            since=since,
            folder=self._folder(job_id),
        )
        self._jobs[job_id] = job
        job.task = asyncio.create_task(
            self._run(job, pool, metrics, who, patient_system), name=f"fhir-export-{job_id}"
        )
        log.info("fhir_export_started", job=job_id, types=",".join(job.types))
        return job

    def find(self, job_id: str, who: Clinician) -> ExportJob | None:
        """The job if it exists and ``who`` started it; None otherwise (the same answer)."""
        self._purge()
        job = self._jobs.get(job_id)
        return job if job is not None and job.clinician_id == who.id else None

    def cancel(self, job: ExportJob) -> None:
        """Stop the job if it runs, and delete it and its files."""
        if job.task is not None and not job.task.done():
            job.task.cancel()
        self._jobs.pop(job.id, None)
        shutil.rmtree(job.folder, ignore_errors=True)
        log.info("fhir_export_deleted", job=job.id)

    def _purge(self) -> None:
        now = self._clock()
        for job in list(self._jobs.values()):
            if job.finished is not None and now - job.finished > KEEP_S:
                self.cancel(job)

    async def _run(
        self,
        job: ExportJob,
        pool: asyncpg.Pool,
        metrics: Metrics,
        who: Clinician,
        patient_system: str,
    ) -> None:
        patients: set[str] = set()
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
                job.transaction_time = await conn.fetchval("SELECT now()")
                for kind in job.types:
                    path = job.folder / f"{kind}.ndjson"
                    count = 0
                    with path.open("w", encoding="utf-8") as out:
                        rows = conn.cursor(_SQL[kind], job.care_team_id, job.since, prefetch=500)
                        async for row in rows:
                            resource = _to_resource(kind, row, patient_system)
                            if resource is None:
                                continue
                            out.write(json.dumps(resource, separators=(",", ":")) + "\n")
                            patients.add(row["patient_id"])
                            count += 1
                    if count:
                        job.outputs[kind] = (path, count)
                    else:
                        path.unlink()
                await log_access(
                    conn,
                    metrics,
                    who,
                    sorted(patients),
                    "fhir_export",
                    requested_id=job.care_team_id,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job fails, the API goes on
            job.state = "failed"
            job.outputs.clear()
            with contextlib.suppress(OSError):
                shutil.rmtree(job.folder)
            log.error("fhir_export_failed", job=job.id, error=type(exc).__name__)
        else:
            job.state = "complete"
            log.info(
                "fhir_export_complete",
                job=job.id,
                patients=len(patients),
                resources=sum(n for _, n in job.outputs.values()),
            )
        finally:
            job.finished = self._clock()
