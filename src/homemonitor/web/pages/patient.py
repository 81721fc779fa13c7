"""The Patient page, ``/patients/{id}``: charts of every quantity over 14, 30 or 90 days with
the plan's bounds, each device and gateway with its last reading, the care plan and its
versions, and editing the plan into a new version with a reason after a backtest preview.

The read is access-logged as ``view_patient``; the preview and the save are the API's own
route functions (``rules_backtest``, ``change_care_plan``: same checks, same log rows, same
422 for a plan that cannot run, same 409 when someone saved a newer version meanwhile).
The plan is edited in a form of fields (:mod:`homemonitor.web.planform`: the template, its
personal values, each rule's numbers), or as YAML, the registry's own format, in an
"advanced" box; both post to the same preview and save (``editor`` says which), and nothing
of either goes into a URL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, Form, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError

from homemonitor.access_actions import AccessAction
from homemonitor.api.access import team_patient
from homemonitor.api.backtest import backtest_care_plan
from homemonitor.api.deps import Svc
from homemonitor.api.models import CarePlanChangeIn, PatientId
from homemonitor.api.plans import change_care_plan
from homemonitor.errors import PlanError
from homemonitor.registry import plans
from homemonitor.rules.backtest import BacktestIn, Proposal
from homemonitor.rules.plan import CarePlanSpec, Plan
from homemonitor.web import i18n, overview, planform, render
from homemonitor.web.charts import time_series
from homemonitor.web.pages import speech
from homemonitor.web.session import Csrf, WebMe

router = APIRouter(include_in_schema=False)

ACTION: AccessAction = "view_patient"
#: The periods the page offers.
PERIODS = (14, 30, 90)
#: How far back the preview replays a proposed plan.
PREVIEW_DAYS = 90

i18n.add(planform.MESSAGES)
i18n.add(
    {
        "sv": {
            "patient.title": "Patient {id}",
            "patient.period": "Period",
            "patient.days.one": "{n} dag",
            "patient.days.other": "{n} dagar",
            "patient.charts": "Mätvärden",
            "patient.no_data": "Inga mätningar eller gränser att visa för perioden.",
            "patient.devices": "Mätare och hubbar",
            "patient.device": "Mätare",
            "patient.kind": "Typ",
            "patient.last_reading": "Senaste mätning",
            "patient.gateway": "Hubb",
            "patient.gateway_last": "Senast via hubben",
            "patient.adherence": "Dagar med mätning (14)",
            "patient.never": "aldrig",
            "patient.plan": "Vårdplan",
            "patient.no_plan": "Patienten har ingen vårdplan.",
            "patient.version": "Version {v}",
            "patient.changed": "Ändrad {at} av {by}: {reason}",
            "patient.rules": "Regler",
            "patient.versions": "Versioner",
            "patient.edit": "Ändra vårdplanen",
            "patient.spec": "Vårdplan (YAML)",
            "patient.advanced": "Avancerat: hela planen som YAML",
            "patient.spec_help": (
                "Samma format som registret: template, personal, overrides, disabled, "
                "rules, thresholds."
            ),
            "patient.reason": "Varför ändras planen?",
            "patient.reason_yaml": "Varför ändras planen? (YAML)",
            "patient.preview": "Förhandsgranska mot de senaste 90 dagarna",
            "patient.save": "Spara som ny version",
            "patient.preview_title.one": "Vad ändringen hade gett det senaste dygnet",
            "patient.preview_title.other": "Vad ändringen hade gett de senaste {n} dagarna",
            "patient.side": "Plan",
            "patient.current": "Nuvarande",
            "patient.proposed": "Föreslagen",
            "patient.stored": "Larm i databasen",
            "patient.total": "Totalt",
            "patient.when": "Tid",
            "patient.rule": "Regel",
            "patient.why": "Varför",
            "patient.invalid": "Planen kan inte sparas: {problem}",
            "patient.conflict": "Någon har sparat en nyare version under tiden. Ladda om sidan.",
            "patient.saved": "Version {v} är sparad.",
            "patient.reason_missing": "Skriv varför planen ändras.",
        },
        "en": {
            "patient.title": "Patient {id}",
            "patient.period": "Period",
            "patient.days.one": "{n} day",
            "patient.days.other": "{n} days",
            "patient.charts": "Readings",
            "patient.no_data": "No readings or bounds to show for the period.",
            "patient.devices": "Devices and hubs",
            "patient.device": "Device",
            "patient.kind": "Kind",
            "patient.last_reading": "Last reading",
            "patient.gateway": "Hub",
            "patient.gateway_last": "Last through the hub",
            "patient.adherence": "Days with a reading (14)",
            "patient.never": "never",
            "patient.plan": "Care plan",
            "patient.no_plan": "The patient has no care plan.",
            "patient.version": "Version {v}",
            "patient.changed": "Changed {at} by {by}: {reason}",
            "patient.rules": "Rules",
            "patient.versions": "Versions",
            "patient.edit": "Change the care plan",
            "patient.spec": "Care plan (YAML)",
            "patient.advanced": "Advanced: the whole plan as YAML",
            "patient.spec_help": (
                "The registry's format: template, personal, overrides, disabled, rules, thresholds."
            ),
            "patient.reason": "Why does the plan change?",
            "patient.reason_yaml": "Why does the plan change? (YAML)",
            "patient.preview": "Preview against the last 90 days",
            "patient.save": "Save as a new version",
            "patient.preview_title.one": "What the change would have raised in the last day",
            "patient.preview_title.other": (
                "What the change would have raised in the last {n} days"
            ),
            "patient.side": "Plan",
            "patient.current": "Current",
            "patient.proposed": "Proposed",
            "patient.stored": "Alerts in the database",
            "patient.total": "Total",
            "patient.when": "Time",
            "patient.rule": "Rule",
            "patient.why": "Why",
            "patient.invalid": "The plan cannot be saved: {problem}",
            "patient.conflict": "Someone saved a newer version meanwhile. Reload the page.",
            "patient.saved": "Version {v} is saved.",
            "patient.reason_missing": "Say why the plan changes.",
        },
    }
)


def spec_yaml(spec: CarePlanSpec | None) -> str:
    """A spec as the YAML a clinician edits (what its author set, as stored)."""
    if spec is None:
        return "thresholds: {}\n"
    data = spec.model_dump(mode="json", exclude_unset=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def parse_spec(text: str) -> CarePlanSpec:
    """The posted YAML as a spec; :class:`PlanError` naming the first problem."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PlanError(f"not YAML ({exc.__class__.__name__})") from exc
    try:
        return CarePlanSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlanError(f"{where}: {first['msg']}" if where else first["msg"]) from exc


async def _page(
    request: Request,
    svc: Svc,
    who: WebMe,
    patient_id: str,
    days: int,
    *,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    """The page, the read checked and logged first (another team's patient: 404, denied)."""
    t, lang = speech(request)
    now = datetime.now(UTC)
    start = now - timedelta(days=days)
    async with svc.pool.acquire() as conn, conn.transaction():
        await team_patient(conn, svc.metrics, who, patient_id, ACTION)
    async with svc.reads.acquire() as conn:
        points = await overview.series(conn, patient_id, start, now)
        devices = await overview.devices(conn, patient_id, now)
        versions = await plans.history(conn, patient_id)
    plan: Plan | None = None
    if versions:
        try:
            plan = plans.resolved(versions[0].spec, versions[0].version)
        except PlanError:  # a template changed under it: no bounds to draw
            plan = None
    figures = []
    for quantity in overview.QUANTITIES:
        bounds = overview.bounds(plan, quantity)
        if quantity not in points and not bounds:
            continue
        figures.append(
            time_series(
                points.get(quantity, []),
                start=start,
                end=now,
                title=t(f"q.{quantity.value}"),
                unit=quantity.unit,
                chart_id=f"chart-{quantity.value}",
                t=t,
                lang=lang,
                bounds=bounds,
            )
        )
    form = form or {}
    current = versions[0].spec if versions else CarePlanSpec()
    plan_form = form.get("plan_form") or planform.show(current, plans.templates(), t)
    context = {
        "patient_id": patient_id,
        "days": days,
        "periods": PERIODS,
        "figures": figures,
        "devices": devices,
        "versions": versions,
        "plan": plan,
        "spec_text": form.get("spec_text", spec_yaml(versions[0].spec if versions else None)),
        "plan_form": plan_form,
        "form_base": spec_yaml(plan_form.base),
        "editor": form.get("editor", "form"),
        "reason": form.get("reason", ""),
        "based_on": versions[0].version if versions else None,
        "preview": form.get("preview"),
        "proposal": form.get("proposal"),
        "error": form.get("error"),
        "saved": form.get("saved"),
        "reason_error": form.get("reason_error", False),
    }
    return render(request, "pages/patient.html", context, who=who, status_code=status_code)


@router.get("/patients/{patient_id}")
async def patient_page(
    request: Request,
    svc: Svc,
    *,
    who: WebMe,
    patient_id: PatientId,
    days: Annotated[int, Query(description="14, 30 or 90")] = 14,
    saved: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    if days not in PERIODS:
        raise HTTPException(422, "days is 14, 30 or 90")
    return await _page(request, svc, who, patient_id, days, form={"saved": saved})


def _problem(response: JSONResponse) -> str:
    """The problems a 422 of the API names, in one line."""
    detail = json.loads(bytes(response.body))["detail"]
    return "; ".join(d["msg"] for d in detail) if isinstance(detail, list) else str(detail)


Editor = Annotated[Literal["form", "yaml"], Form()]


async def _posted(
    request: Request, editor: str, spec_text: str, reason: str
) -> tuple[CarePlanSpec | None, dict[str, Any]]:
    """The spec a form posted and what the page shows again: the form with what was typed
    and, when something is wrong, the message (the spec None)."""
    t, lang = speech(request)
    form: dict[str, Any] = {"spec_text": spec_text, "reason": reason, "editor": editor}
    try:
        base = parse_spec(spec_text)
    except PlanError as exc:
        form["error"] = t("patient.invalid", problem=str(exc))
        return None, form
    if editor == "yaml":
        return base, form
    posted = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    spec, form["plan_form"] = planform.read(base, posted, plans.templates(), t, lang)
    if spec is None:
        form["error"] = t("planform.invalid")
        form["spec_text"] = spec_yaml(base)
        return None, form
    form["spec_text"] = spec_yaml(spec)  # the advanced box shows what the fields made
    return spec, form


@router.post("/patients/{patient_id}/care-plan/preview", dependencies=[Csrf])
async def preview_plan(
    request: Request,
    svc: Svc,
    *,
    who: WebMe,
    patient_id: PatientId,
    spec_text: Annotated[str, Form(max_length=20_000)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    editor: Editor = "yaml",
) -> Response:
    """What the posted plan would have raised over the last 90 days, beside the current one."""
    t, lang = speech(request)
    spec, form = await _posted(request, editor, spec_text, reason)
    if spec is None:
        return await _page(request, svc, who, patient_id, 14, form=form, status_code=422)
    form["proposal"] = Proposal(spec=spec).describe("sv" if lang == "sv" else "en")
    report = await backtest_care_plan(
        svc, who, patient_id, BacktestIn(spec=spec, days=PREVIEW_DAYS)
    )
    if isinstance(report, JSONResponse):
        form["error"] = t("patient.invalid", problem=_problem(report))
        return await _page(request, svc, who, patient_id, 14, form=form, status_code=422)
    form["preview"] = report
    return await _page(request, svc, who, patient_id, 14, form=form)


@router.post("/patients/{patient_id}/care-plan", dependencies=[Csrf])
async def save_plan(
    request: Request,
    svc: Svc,
    *,
    who: WebMe,
    patient_id: PatientId,
    spec_text: Annotated[str, Form(max_length=20_000)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    based_on: Annotated[int | None, Form(ge=1, le=2**31 - 1)] = None,
    editor: Editor = "yaml",
) -> Response:
    """Save the posted plan as the next version (the API's change), then show the page."""
    t, _ = speech(request)
    spec, form = await _posted(request, editor, spec_text, reason)
    if spec is None:
        return await _page(request, svc, who, patient_id, 14, form=form, status_code=422)
    try:
        if not reason.strip():
            raise PlanError(t("patient.reason_missing"))
        change = CarePlanChangeIn(spec=spec, reason=reason.strip(), based_on=based_on)
    except (PlanError, ValidationError) as exc:
        form["error"] = t("patient.invalid", problem=str(exc))
        form["reason_error"] = not reason.strip()
        return await _page(request, svc, who, patient_id, 14, form=form, status_code=422)
    try:
        saved = await change_care_plan(svc, who, patient_id, change)
    except HTTPException as exc:
        if exc.status_code != 409:
            raise
        form["error"] = t("patient.conflict")
        return await _page(request, svc, who, patient_id, 14, form=form, status_code=409)
    if isinstance(saved, JSONResponse):
        form["error"] = t("patient.invalid", problem=_problem(saved))
        return await _page(request, svc, who, patient_id, 14, form=form, status_code=422)
    return RedirectResponse(f"/patients/{patient_id}?saved={saved.version}#plan", status_code=303)
