"""The ops endpoints: liveness, readiness and Prometheus metrics (no token, no patient data)."""

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from homemonitor.api.deps import Svc
from homemonitor.api.models import ReadyOut

router = APIRouter(tags=["ops"])


@router.get("/health", summary="Liveness: the process answers.")
async def get_health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: broker, database and registry are up.",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready; the body says why."}},
)
async def get_ready(svc: Svc) -> JSONResponse:
    health = svc.health
    body = ReadyOut(
        ready=health.ready,
        storage_mode=health.storage_mode.value if health.storage_mode else None,
        broker_connected=health.broker_connected,
        database_ok=health.database_ok,
        registry_loaded=health.registry_loaded,
    )
    return JSONResponse(body.model_dump(), status_code=200 if health.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics.",
    response_class=PlainTextResponse,
    responses={200: {"description": "The Prometheus text exposition format."}},
)
async def get_metrics(svc: Svc) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
