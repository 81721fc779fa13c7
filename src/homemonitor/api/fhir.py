"""FHIR R4 out: a care team's readings and alerts for journal systems and bulk clients.

A small, standard subset (``docs/fhir.md``, "Out"): search Observations and Flags of one
patient (a ``searchset`` Bundle), and Bulk Data ``$export`` of the clinician's care team
(``Group/<care team>/$export``: kick-off, status, NDJSON files). Bodies are
``application/fhir+json``; errors FHIR-side are OperationOutcomes (401 and 422 keep the
API's own JSON error bodies). Authentication, care-team scoping and the access log are the
clinician API's: another team's patient, group or export answers 404 like an unknown one,
and the attempt is logged as ``denied``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from homemonitor.access_actions import AccessAction
from homemonitor.api.access import NotVisibleError, team_patient
from homemonitor.api.deps import Me, Svc
from homemonitor.api.fhir_export import EXPORT_TYPES, ExportJob, TooManyExportsError
from homemonitor.api.models import FHIR_BASE, FHIR_JSON, ErrorOut, Responses
from homemonitor.contract.protocol import parse_timestamp
from homemonitor.fhir_out import AlertRecord, ReadingRecord, bundle, flag, instant, observation
from homemonitor.fhir_out import operation_outcome as outcome
from homemonitor.fields import ID_PATTERN

NDJSON = "application/fhir+ndjson"
_MICROSECOND = timedelta(microseconds=1)

# A FHIR instant that is a real moment, as a pattern the OpenAPI document publishes (so a
# client, and schemathesis, know it): a time of day and an offset always; years 1000-2999;
# days a month can have (29 February is left out: the pattern cannot know leap years).
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    "|(?:0[13578]|1[02])-31)"
)
INSTANT = (
    f"[12][0-9]{{3}}-{_MONTH_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    "(?:[.][0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
DatePrefix = Annotated[str, StringConstraints(pattern=f"^(?:ge|gt|le|lt){INSTANT}$")]


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


router = APIRouter(prefix=FHIR_BASE, tags=["fhir"], default_response_class=FhirJSONResponse)


# --- what the OpenAPI document says the routes answer ---------------------------------


class BundleOut(BaseModel):
    """A FHIR R4 Bundle of type searchset (the resources are described in docs/fhir.md)."""

    model_config = ConfigDict(extra="allow", title="Bundle")
    resource_type: Literal["Bundle"] = Field(alias="resourceType")
    type: Literal["searchset"]
    total: int
    entry: list[dict[str, Any]] = Field(default_factory=list)


class OperationOutcomeOut(BaseModel):
    """A FHIR R4 OperationOutcome: what went wrong, for a person to read."""

    model_config = ConfigDict(extra="allow", title="OperationOutcome")
    resource_type: Literal["OperationOutcome"] = Field(alias="resourceType")
    issue: list[dict[str, Any]] = Field(min_length=1)


class ManifestOutput(BaseModel):
    type: str
    url: str
    count: int


class ManifestOut(BaseModel):
    """The Bulk Data complete-status manifest."""

    model_config = ConfigDict(title="ExportManifest")
    transaction_time: str = Field(alias="transactionTime")
    request: str
    requires_access_token: bool = Field(alias="requiresAccessToken")
    output: list[ManifestOutput]
    error: list[ManifestOutput]


class CapabilityOut(BaseModel):
    model_config = ConfigDict(extra="allow", title="CapabilityStatement")
    resource_type: Literal["CapabilityStatement"] = Field(alias="resourceType")


_OUTCOME = {"schema": OperationOutcomeOut.model_json_schema(by_alias=True)}


def _fhir_error(status: int, description: str, **extra: Any) -> Responses:
    return {status: {"description": description, "content": {FHIR_JSON: _OUTCOME}, **extra}}


# 401 comes from the bearer-token dependency, as on every clinician route: the API's JSON.
UNAUTHENTICATED: Responses = {
    401: {
        "description": "No bearer token, or an unknown or revoked one.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": ErrorOut.model_json_schema()}},
    }
}
NO_PATIENT = _fhir_error(404, "No such patient in your care team.")
BAD_SEARCH = _fhir_error(
    400, "A search parameter this server cannot read (the outcome says which)."
)
RETRY: dict[str, Any] = {
    "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}
}


class BadRequestError(Exception):
    """A FHIR request parameter is wrong; answered 400 with an OperationOutcome."""


def bad_request(_: Request, exc: Exception) -> Response:
    """The exception handler for :class:`BadRequestError`."""
    return FhirJSONResponse(outcome(str(exc), "invalid"), status_code=400)


PatientParam = Annotated[
    str,
    Query(
        pattern=r"^(Patient/)?[A-Za-z0-9._:-]{1,64}$",
        examples=["p-0001"],
        description="The patient's registry id (also as Patient/<id>).",
    ),
]


def _patient(value: str) -> str:
    return value.removeprefix("Patient/")


def _instant(value: str, name: str) -> datetime:
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        msg = f"{name}: {exc} (a FHIR instant such as 2026-03-01T00:00:00Z)"
        raise BadRequestError(msg) from None


def _date_range(values: list[str]) -> tuple[datetime | None, datetime | None]:
    """``date=ge…&date=lt…`` as [lower, upper): the prefixes ge, gt, le and lt."""
    lower: datetime | None = None
    upper: datetime | None = None
    for value in values:
        prefix, moment = value[:2], value[2:]
        if prefix not in ("ge", "gt", "le", "lt"):
            msg = "date: give a prefix ge, gt, le or lt and an instant, e.g. ge2026-03-01T00:00:00Z"
            raise BadRequestError(msg)
        at = _instant(moment, "date")
        if prefix in ("ge", "gt"):
            at = at + _MICROSECOND if prefix == "gt" else at
            lower = at if lower is None else max(lower, at)
        else:
            at = at + _MICROSECOND if prefix == "le" else at
            upper = at if upper is None else min(upper, at)
    return lower, upper


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + FHIR_BASE


# --- search ---------------------------------------------------------------------------


@router.get(
    "/metadata",
    summary="FHIR CapabilityStatement: what this server answers.",
    responses={200: {"model": CapabilityOut, "description": "The CapabilityStatement."}},
)
async def capabilities(request: Request) -> Response:
    return FhirJSONResponse(capability_statement(_base(request)))


_SEARCH_READINGS = (
    "SELECT device_id, metric, measured_at, received_at, stored_at, patient_id, systolic, "
    "diastolic, mean_arterial, heart_rate, body_weight, spo2, flags, quality FROM readings "
    "WHERE patient_id = $1 AND measured_at >= coalesce($2::timestamptz, '-infinity') "
    "AND measured_at < coalesce($3::timestamptz, 'infinity') "
)


@router.get(
    "/Observation",
    summary="Search a patient's readings as vital-signs Observations.",
    responses={200: {"model": BundleOut, "description": "A searchset Bundle, newest first."}}
    | UNAUTHENTICATED
    | NO_PATIENT
    | BAD_SEARCH,
)
async def search_observations(
    request: Request,
    svc: Svc,
    who: Me,
    *,
    patient: PatientParam,
    date: Annotated[
        list[DatePrefix],
        Query(
            max_length=2,
            description="effective time: ge, gt, le or lt and an instant; up to twice.",
        ),
    ] = [],  # noqa: B006 - FastAPI copies the default; a list is how it reads a repeated param
    count: Annotated[int, Query(alias="_count", ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(alias="_offset", ge=0, le=10_000_000)] = 0,
) -> Response:
    patient_id = _patient(patient)
    lower, upper = _date_range(date)
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "fhir_observations")
        total = await conn.fetchval(
            f"SELECT count(*) FROM ({_SEARCH_READINGS}) AS matching", patient_id, lower, upper
        )
        rows = await conn.fetch(
            _SEARCH_READINGS + "ORDER BY measured_at DESC, device_id, metric LIMIT $4 OFFSET $5",
            patient_id,
            lower,
            upper,
            count,
            offset,
        )
    system = svc.fhir_patient_system
    links = {"self": str(request.url)}
    if offset + count < total:
        links["next"] = str(request.url.include_query_params(_offset=offset + count))
    resources = [observation(ReadingRecord.from_row(r), system) for r in rows]
    return FhirJSONResponse(bundle(resources, _base(request), total=total, links=links))


@router.get(
    "/Flag",
    summary="Search a patient's alerts as Flags.",
    responses={200: {"model": BundleOut, "description": "A searchset Bundle, newest first."}}
    | UNAUTHENTICATED
    | NO_PATIENT,
)
async def search_flags(
    request: Request,
    svc: Svc,
    who: Me,
    patient: PatientParam,
    status: Annotated[
        Literal["active", "inactive", "entered-in-error"] | None,
        Query(description="Flag.status: active (open, acknowledged) or inactive (resolved)."),
    ] = None,
) -> Response:
    patient_id = _patient(patient)
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, "fhir_flags")
        rows = await conn.fetch(
            "SELECT *, latest_explanation->>'sentence' AS explanation FROM alerts "
            "WHERE patient_id = $1 ORDER BY opened_at DESC LIMIT 1000",
            patient_id,
        )
    flags = [flag(AlertRecord.from_row(r), svc.fhir_patient_system) for r in rows]
    found = [f for f in flags if f is not None and status in (None, f["status"])]
    links = {"self": str(request.url)}
    return FhirJSONResponse(bundle(found, _base(request), total=len(found), links=links))


# --- Bulk Data $export ----------------------------------------------------------------

_EXPORT: AccessAction = "fhir_export"
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The export's id.")]


def _types(value: str | None) -> tuple[str, ...]:
    if value is None:
        return EXPORT_TYPES
    asked = {t.strip() for t in value.split(",")}
    unknown = sorted(asked - set(EXPORT_TYPES))
    if unknown or not asked:
        msg = f"_type: {', '.join(unknown) or '(empty)'} not exported; this server exports "
        raise BadRequestError(msg + ", ".join(EXPORT_TYPES))
    return tuple(t for t in EXPORT_TYPES if t in asked)


@router.get(
    "/Group/{group_id}/$export",
    summary="Bulk Data export of my care team (kick-off).",
    status_code=202,
    responses={
        202: {
            "description": "Started; poll the URL in Content-Location.",
            "headers": {"Content-Location": {"schema": {"type": "string"}}},
            "content": {FHIR_JSON: _OUTCOME},
        }
    }
    | UNAUTHENTICATED
    | _fhir_error(400, "A parameter this server cannot read (the outcome says which).")
    | _fhir_error(404, "No such group: the group is your own care team's id.")
    | _fhir_error(429, "Too many exports running; retry later.", headers=RETRY),
)
async def export_kick_off(
    request: Request,
    svc: Svc,
    who: Me,
    *,
    group_id: Annotated[
        str, Path(pattern=ID_PATTERN, examples=["vc-a"], description="Your care team's id.")
    ],
    prefer: Annotated[
        str, Header(pattern="^.*respond-async.*$", description="Must be respond-async.")
    ],
    type_: Annotated[
        str | None,
        Query(
            alias="_type",
            pattern="^(?:Observation|Flag)(?:,(?:Observation|Flag))*$",
            description="Comma-separated: Observation, Flag (default both).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            alias="_since",
            pattern=f"^{INSTANT}$",
            description="Only what changed after this instant.",
        ),
    ] = None,
    output_format: Annotated[
        Literal["application/fhir+ndjson", "application/ndjson", "ndjson"] | None,
        Query(alias="_outputFormat"),
    ] = None,
) -> Response:
    del output_format  # one format: NDJSON, however it is spelled
    if "respond-async" not in prefer.lower():
        msg = "send 'Prefer: respond-async': $export answers asynchronously only"
        raise BadRequestError(msg)
    types = _types(type_)
    after = None if since is None else _instant(since, "_since")
    if group_id != who.care_team_id:
        raise NotVisibleError(who, _EXPORT, "group", group_id, None)
    try:
        job = svc.fhir_exports.start(
            svc.pool,
            svc.metrics,
            who,
            types=types,
            since=after,
            request=str(request.url),
            patient_system=svc.fhir_patient_system,
        )
    except TooManyExportsError:
        body = outcome("too many exports running; retry later", "throttled")
        return FhirJSONResponse(body, status_code=429, headers={"Retry-After": "30"})
    status_url = str(request.url_for("export_status", job_id=job.id))
    body = outcome(f"export {job.id} started", "informational", severity="information")
    return FhirJSONResponse(body, status_code=202, headers={"Content-Location": status_url})


def _own_job(svc: Svc, who: Me, job_id: str) -> ExportJob:
    job = svc.fhir_exports.find(job_id, who)
    if job is None:
        raise NotVisibleError(who, _EXPORT, "export", job_id, None)
    return job


NO_EXPORT = _fhir_error(404, "No such export of yours (unknown, expired or another's).")
STATUS_RESPONSES: Responses = {
    200: {"model": ManifestOut, "description": "Complete: where the NDJSON files are."},
    202: {
        "description": "Still running.",
        "headers": {"X-Progress": {"schema": {"type": "string"}}} | RETRY,
    },
}


@router.get(
    "/$export-status/{job_id}",
    summary="Bulk Data export status: 202 while running, 200 with the manifest when done.",
    response_class=JSONResponse,
    responses=STATUS_RESPONSES
    | UNAUTHENTICATED
    | NO_EXPORT
    | _fhir_error(500, "The export failed; start a new one."),
)
async def export_status(request: Request, svc: Svc, who: Me, job_id: JobId) -> Response:
    job = _own_job(svc, who, job_id)
    if job.state == "running":
        return Response(status_code=202, headers={"X-Progress": "running", "Retry-After": "1"})
    if job.state == "failed" or job.transaction_time is None:
        return FhirJSONResponse(outcome("the export failed; start a new one", "exception"), 500)
    output = [
        {
            "type": kind,
            "url": str(request.url_for("export_file", job_id=job.id, resource_type=kind)),
            "count": count,
        }
        for kind, (_, count) in job.outputs.items()
    ]
    manifest = {
        "transactionTime": instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": True,
        "output": output,
        "error": [],
    }
    return JSONResponse(manifest)


@router.delete(
    "/$export-status/{job_id}",
    summary="Cancel a Bulk Data export, or delete a finished one and its files.",
    status_code=202,
    response_class=Response,
    responses={202: {"description": "Cancelled and deleted."}} | UNAUTHENTICATED | NO_EXPORT,
)
async def export_delete(svc: Svc, who: Me, job_id: JobId) -> Response:
    svc.fhir_exports.cancel(_own_job(svc, who, job_id))
    return Response(status_code=202)


@router.get(
    "/$export-files/{job_id}/{resource_type}.ndjson",
    summary="One NDJSON file of a finished Bulk Data export.",
    response_class=Response,
    responses={
        200: {
            "description": "One resource per line.",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        }
    }
    | UNAUTHENTICATED
    | NO_EXPORT,
)
async def export_file(
    svc: Svc,
    who: Me,
    job_id: JobId,
    resource_type: Literal["Observation", "Flag"],
) -> Response:
    job = _own_job(svc, who, job_id)
    found = job.outputs.get(resource_type) if job.state == "complete" else None
    if found is None:
        return FhirJSONResponse(outcome("no such file in this export", "not-found"), 404)
    return FileResponse(found[0], media_type=NDJSON)


def capability_statement(base: str) -> dict[str, Any]:
    """What this server answers, as a FHIR R4 CapabilityStatement."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-01",
        "kind": "instance",
        "software": {"name": "homemonitor"},
        "implementation": {"description": "homemonitor FHIR R4 out", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {"description": "Bearer tokens (homemonitor token issue)."},
                "resource": [
                    {
                        "type": "Observation",
                        "supportedProfile": [
                            "http://hl7.org/fhir/StructureDefinition/bp",
                            "http://hl7.org/fhir/StructureDefinition/bodyweight",
                            "http://hl7.org/fhir/StructureDefinition/oxygensat",
                            "http://hl7.org/fhir/StructureDefinition/heartrate",
                        ],
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            {"name": "patient", "type": "reference"},
                            {"name": "date", "type": "date"},
                        ],
                    },
                    {
                        "type": "Flag",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [
                            {"name": "patient", "type": "reference"},
                            {"name": "status", "type": "token"},
                        ],
                    },
                    {
                        "type": "Group",
                        "operation": [
                            {
                                "name": "export",
                                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
                            }
                        ],
                    },
                ],
            }
        ],
    }
