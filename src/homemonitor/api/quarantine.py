"""The quarantine for the ops role: what was refused and why, and a replay once it is fixed.

The same operations as ``homemonitor quarantine list|show|replay``, over
:mod:`homemonitor.ingest.quarantine`. No answer carries a payload or a value: the raw bytes
hold measured values and stay with the command line (``show --payload``). A replay names
the ops user in the rows' ``replayed_by``. Every route answers 403 to any role but ``ops``.
"""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from homemonitor.api.deps import Ops, Svc
from homemonitor.api.models import (
    NO_QUARANTINE_ROW,
    NOT_OPS,
    UNAUTHENTICATED,
    UNPARSABLE,
    GatewayId,
    Moment,
    QuarantineCountOut,
    QuarantineId,
    QuarantineListOut,
    QuarantineRowOut,
    ReplayIn,
    ReplayOut,
)
from homemonitor.contract.readings import Reason
from homemonitor.ingest import quarantine

router = APIRouter(prefix="/api/v1/ops/quarantine", tags=["ops"])


@router.get(
    "",
    summary="Quarantined messages by reason, and the newest rows (no payloads).",
    responses=UNAUTHENTICATED | NOT_OPS,
)
async def list_quarantine(
    svc: Svc,
    _: Ops,
    *,
    reason: Reason | None = None,
    gateway: Annotated[GatewayId | None, Query(description="What this gateway published.")] = None,
    since: Annotated[Moment | None, Query(description="Received at or after.")] = None,
    until: Annotated[Moment | None, Query(description="Received before.")] = None,
    pending: Annotated[
        bool, Query(description="Only rows never replayed, or not stored by their last replay.")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> QuarantineListOut:
    which = quarantine.Filter(
        reason=reason, gateway_id=gateway, since=since, until=until, pending=pending
    )
    async with svc.pool.acquire() as conn:
        counts = await quarantine.counts(conn, which)
        rows = await quarantine.rows(conn, which, limit=limit)
    return QuarantineListOut(
        counts=[QuarantineCountOut.model_validate(c) for c in counts],
        rows=[QuarantineRowOut.model_validate(r) for r in rows],
    )


@router.get(
    "/{row_id:int}",  # digits only: GET .../replay is a 405 (POST only), not a bad row id
    summary="One quarantine row (no payload).",
    responses=UNAUTHENTICATED | NOT_OPS | NO_QUARANTINE_ROW,
)
async def show_quarantine(svc: Svc, _: Ops, row_id: QuarantineId) -> QuarantineRowOut:
    async with svc.pool.acquire() as conn:
        found = await quarantine.rows(conn, quarantine.Filter(ids=[row_id]), limit=1)
    if not found:
        raise HTTPException(404, "no such quarantine row")
    return QuarantineRowOut.model_validate(found[0])


@router.post(
    "/replay",
    summary="Replay matching rows through the whole pipeline, once the cause is fixed.",
    responses=UNAUTHENTICATED | NOT_OPS | UNPARSABLE,
)
async def replay_quarantine(svc: Svc, who: Ops, body: ReplayIn) -> ReplayOut:
    which = quarantine.Filter(
        ids=body.ids,
        reason=body.reason,
        gateway_id=body.gateway,
        since=body.since,
        until=body.until,
        pending=body.pending,
    )
    async with svc.pool.acquire() as conn:
        done = await quarantine.replay(
            conn, which, by=who.id, clock=svc.clock, max_payload_bytes=svc.max_payload_bytes
        )
    return ReplayOut(
        messages=done.messages,
        rows=done.rows,
        stored=done.stored,
        already_stored=done.already_stored,
        still_refused=dict(done.still_refused),
        opened=dict(done.opened),
    )
