"""The live stream of a care team's alert changes: ``GET /api/v1/alerts/stream`` (SSE).

Server-Sent Events, for the web app: one ``alert`` event per change of an alert the
clinician's care team sees (:func:`homemonitor.api.access.visible`: its own, and those
routed or escalated to it as another team's out-of-hours route; every ``alert_events``
kind but ``notified``), with ids, kind, severity and status, never a measured value; a
``: heartbeat`` comment every ``HOMEMONITOR_STREAM_HEARTBEAT_S``. Woken by the process's
:class:`~homemonitor.notify.feed.AlertFeed` (the trigger's ``pg_notify`` at commit),
then read from the database.

Resume: each event's SSE ``id`` is a watermark, the highest event id below which this
stream has sent every committed change. It equals the event's own id unless a change
with a smaller id was still being committed (ids are drawn before commit, so a slower
transaction can commit a smaller id later); then it stays below it until that one is
sent or :data:`GAP_GRACE_S` has passed (a rolled-back id never commits). A client that
reconnects with ``Last-Event-ID`` gets every change after it, some perhaps again: dedupe
by ``data.event_id``. Without the header the stream starts with the next change.

At each heartbeat the stream looks its credential up again (one indexed query, not the
person's activity: an open tab does not hold a web session open) and ends when the web
session has ended (signed out, idle, too old) or the API token is revoked or expired, or
it names somebody else now (a clinician moved to another team): an ended sign-in stops
showing alert changes within a heartbeat. The browser's reconnect then gets a 401.

The stream is access-logged once when it opens (action ``alert_stream``, the care team as
``requested_id``): it carries patient ids, not their data. Not in the OpenAPI document: it
never ends, which a schema fuzzer cannot call (docs/notifications.md describes it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from homemonitor import logs
from homemonitor.api.access import visible
from homemonitor.api.auth import Clinician
from homemonitor.api.deps import Credential, Me, Services, Svc, credential

log = logs.get_logger(__name__)
router = APIRouter(tags=["alerts"])

#: How long a stream waits for a smaller id still being committed before it moves on.
GAP_GRACE_S = 10.0
#: Events read per query.
_PAGE = 500
_EVENTS = f"""
SELECT e.id, e.kind, e.at, e.actor, e.clinician_id, a.id AS alert_id, a.patient_id,
       a.rule, a.kind AS alert_kind, a.severity, a.status
FROM alert_events AS e JOIN alerts AS a ON a.id = e.alert_id
WHERE e.id > $1 AND {visible("$2", alerts="a")} AND e.kind <> 'notified'
ORDER BY e.id
LIMIT $3
"""


class Watermark:
    """The id below which a stream has sent everything, and what it sent above it.

    >>> w = Watermark(10)
    >>> w.add(12), w.low, w.add(11), w.low, w.add(12)
    (True, 10, True, 12, False)
    >>> w.add(14), w.settle(0.0), w.settle(GAP_GRACE_S + 1), w.low
    (True, False, True, 14)
    """

    def __init__(self, low: int) -> None:
        self.low = low
        self.sent: set[int] = set()
        self._gap_since: float | None = None

    def add(self, event_id: int) -> bool:
        """Record ``event_id`` as sent; False if it was already."""
        if event_id <= self.low or event_id in self.sent:
            return False
        self.sent.add(event_id)
        self._advance()
        return True

    def _advance(self) -> None:
        while self.low + 1 in self.sent:
            self.sent.discard(self.low + 1)
            self.low += 1

    def settle(self, now: float) -> bool:
        """Give up on a gap older than :data:`GAP_GRACE_S`; whether ``low`` moved."""
        if not self.sent:
            self._gap_since = None
            return False
        if self._gap_since is None:
            self._gap_since = now
            return False
        if now - self._gap_since < GAP_GRACE_S:
            return False
        self.low = min(self.sent) - 1
        self._gap_since = None
        self._advance()
        return True


def _event(r: asyncpg.Record, watermark: int) -> str:
    data = {
        "event_id": r["id"],
        "kind": r["kind"],
        "at": r["at"].isoformat(),
        "actor": r["actor"],
        "clinician_id": r["clinician_id"],
        "alert": {
            "id": r["alert_id"],
            "patient_id": r["patient_id"],
            "rule": r["rule"],
            "kind": r["alert_kind"],
            "severity": r["severity"],
            "status": r["status"],
        },
    }
    return f"id: {watermark}\nevent: alert\ndata: {json.dumps(data)}\n\n"


async def _changes(
    svc: Services, who: Clinician, signed_in: Credential, start: int
) -> AsyncIterator[str]:
    feed = svc.feed
    mark = Watermark(start)
    loop = asyncio.get_running_loop()
    beat_every = svc.stream_heartbeat_s
    yield "retry: 3000\n\n"
    beat = loop.time() + beat_every
    while not feed.stopping.is_set():
        seen = feed.generation
        async with svc.pool.acquire() as conn:
            rows = await conn.fetch(_EVENTS, mark.low, who.care_team_id, _PAGE)
        out = [_event(r, mark.low) for r in rows if mark.add(r["id"])]
        if mark.settle(loop.time()) or (rows and not out):
            out.append(f"id: {mark.low}\n\n")  # moves the client's Last-Event-ID only
        if out:
            yield "".join(out)
        if len(rows) == _PAGE:
            continue
        now = loop.time()
        if now >= beat:
            async with svc.pool.acquire() as conn:
                current = await signed_in.who(conn, svc.web)
            if current != who:
                log.info("alert stream ended: its sign-in has", credential=signed_in.kind)
                return
            yield ": heartbeat\n\n"
            beat = now + beat_every
        wait = beat - now if not mark.sent else min(beat - now, 1.0)
        await feed.changed(seen, max(wait, 0.0))


@router.get("/api/v1/alerts/stream", include_in_schema=False)
async def stream(
    request: Request,
    svc: Svc,
    who: Me,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> StreamingResponse:
    """My care team's alert changes as Server-Sent Events (see the module docstring)."""
    async with svc.pool.acquire() as conn, conn.transaction():
        start = last_event_id
        if start is None:
            start = await conn.fetchval("SELECT coalesce(max(id), 0) FROM alert_events")
        await conn.execute(
            "INSERT INTO access_log (clinician_id, patient_id, action, requested_id) "
            "VALUES ($1, NULL, 'alert_stream', $2)",
            who.id,
            who.care_team_id,
        )
    svc.metrics.api_access("alert_stream")
    return StreamingResponse(
        _changes(svc, who, credential(request), start),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
