"""The clinicians' pages over HTTP against real PostgreSQL: what a user sees, and the
access-log rows each page writes (Patient, plan edit, Alert, My patients, review, follow-up)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import asyncpg
import pytest

from homemonitor import registry
from homemonitor.alerts import rows
from homemonitor.contract.readings import Metric, Quantity
from homemonitor.registry import plans
from homemonitor.rules.history import History, StoredReading
from homemonitor.rules.kinds import assess
from homemonitor.rules.plan import CarePlanSpec, Plan, ThresholdRule
from tests.conftest import REGISTRY, sign_in, web_client
from tests.test_web_queries import alert, reading

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def clinic(db: asyncpg.Connection) -> asyncpg.Connection:
    """The test registry with a reviewer (role ``reviewer``) in vc-a."""
    described = json.loads(json.dumps(REGISTRY))
    described["care_teams"][0]["clinicians"].append(
        {"id": "rv-1", "name": "Granskare R", "role": "reviewer"}
    )
    await registry.apply(db, registry.parse(described))
    return db


async def log_rows(db: asyncpg.Connection) -> list[tuple[object, ...]]:
    rows = await db.fetch(
        "SELECT clinician_id, patient_id, action, outcome FROM access_log ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_patient_page_charts_devices_plan_and_its_access_log(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """The patient's charts with bounds, devices and plan; logged; another team: 404, denied."""
    await reading(
        clinic,
        "cuff-1",
        "p-1",
        "blood_pressure",
        NOW - timedelta(days=2),
        systolic=165,
        diastolic=90,
    )
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        page = await http.get("/patients/p-1")
        month = await http.get("/patients/p-1?days=30")
        await sign_in(http, clinic, "cl-b1")
        foreign = await http.get("/patients/p-1")
    assert 200 == page.status_code
    text = page.text
    assert "Systoliskt blodtryck" in text
    assert "varning 160 mmHg" in text and "brådskande 180 mmHg" in text
    assert "165 mmHg" in text and "varning" in text  # the table names the level
    assert "Dagar utan mätning" in text  # 13 of 14 days without a reading
    assert "1 mätning, lägst 165 mmHg" in text and "1 mätningar" not in text
    assert "cuff-1" in text and "gw-1" in text
    assert "Version 1" in text and "initial" in text
    assert 'aria-current="page">30 dagar' in month.text
    assert "no-store" == page.headers["cache-control"]
    assert 404 == foreign.status_code
    assert [
        ("cl-a1", "p-1", "view_patient", "allowed"),
        ("cl-a1", "p-1", "view_patient", "allowed"),
        ("cl-b1", "p-1", "view_patient", "denied"),
    ] == await log_rows(clinic)


async def test_plan_edit_previews_a_backtest_then_saves_a_new_version(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """Preview shows what the change would have raised (nothing saved); save makes version 2."""
    for day in range(1, 6):
        await reading(
            clinic,
            "cuff-1",
            "p-1",
            "blood_pressure",
            NOW - timedelta(days=day),
            systolic=150,
            diastolic=85,
        )
    proposed = "thresholds:\n  systolic:\n    high: {warning: 145, urgent: 180}\n"
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-a1")
        no_token = await http.post("/patients/p-1/care-plan/preview", data={"spec_text": proposed})
        preview = await http.post(
            "/patients/p-1/care-plan/preview", data={"spec_text": proposed, "csrf": csrf}
        )
        versions_after_preview = await clinic.fetchval(
            "SELECT count(*) FROM care_plans WHERE patient_id = 'p-1'"
        )
        no_reason = await http.post(
            "/patients/p-1/care-plan", data={"spec_text": proposed, "csrf": csrf, "based_on": "1"}
        )
        invalid = await http.post(
            "/patients/p-1/care-plan",
            data={"spec_text": "template: nosuch\n", "reason": "x", "csrf": csrf},
        )
        saved = await http.post(
            "/patients/p-1/care-plan",
            data={"spec_text": proposed, "reason": "lägre gräns", "csrf": csrf, "based_on": "1"},
        )
        stale = await http.post(
            "/patients/p-1/care-plan",
            data={"spec_text": proposed, "reason": "igen", "csrf": csrf, "based_on": "1"},
        )
        after = await http.get(saved.headers["location"])
    assert 403 == no_token.status_code
    assert 200 == preview.status_code
    assert "Vad ändringen hade gett de senaste 90 dagarna" in preview.text
    assert (True, True, False) == (  # the summary and the rows' sentences in Swedish
        "den givna planen (ingen mall, 1 egna regler/gränser)" in preview.text,
        "systoliskt 150 mmHg, på eller över gränsen 145 mmHg för varning" in preview.text,
        "systolic 150 mmHg" in preview.text,
    )
    assert 1 == versions_after_preview
    assert (422, "Skriv varför planen ändras.") == (
        no_reason.status_code,
        "Skriv varför planen ändras." if "Skriv varför planen ändras." in no_reason.text else "",
    )
    assert 422 == invalid.status_code and "nosuch" in invalid.text
    assert (303, "/patients/p-1?saved=2#plan") == (saved.status_code, saved.headers["location"])
    assert 409 == stale.status_code
    assert "Version 2 är sparad." in after.text
    row = await clinic.fetchrow(
        "SELECT changed_by, reason, "
        "plan -> 'thresholds' -> 'systolic' -> 'high' ->> 'warning' AS w "
        "FROM care_plans WHERE patient_id = 'p-1' AND version = 2"
    )
    assert ("cl-a1", "lägre gräns", "145.0") == tuple(row)
    actions = [r[2] for r in await log_rows(clinic) if r[3] == "allowed"]
    assert "rules_backtest" in actions and "change_care_plan" in actions
    # The preview's figures: five readings at 150, all above the proposed 145, none now.
    assert preview.text.count("<code>systolic.high</code>") >= 1


class _FormFields(HTMLParser):
    """What a browser would post from one ``<form id=...>`` of a page, as it stands."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.select = form_id, False, ""
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif self.inside and tag == "input" and "name" in a:
            if a.get("type") != "checkbox" or "checked" in a:
                self.fields[a["name"]] = a.get("value", "on")
        elif self.inside and tag == "select":
            self.select = a["name"]
        elif self.inside and tag == "option" and "selected" in a:
            self.fields[self.select] = a["value"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def plan_form(html: str) -> dict[str, str]:
    """The fields of the Patient page's plan form with what they hold."""
    parser = _FormFields("plan-form")
    parser.feed(html)
    return parser.fields


async def heart_failure_plan(db: asyncpg.Connection) -> None:
    """p-1's version 2: the heart failure template with a dry weight of 82 kg."""
    spec = CarePlanSpec(template="heart_failure", personal={"dry_weight": 82.0})
    await plans.add(db, "p-1", 2, spec, changed_by="cl-a1", reason="mall")


async def test_plan_form_changes_a_template_rule_previews_it_and_saves_an_override(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """A bound changed in the form: previewed against 90 days, saved as an override by whom, why."""
    await heart_failure_plan(clinic)
    for day, kg in ((3, 80.0), (2, 80.6), (1, 81.3)):  # +1.3 kg in 2 days: below 2, above 1
        at = NOW - timedelta(days=day)
        await reading(clinic, "scale-1", "p-1", "body_weight", at, body_weight=kg)
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-a1")
        page = await http.get("/patients/p-1")
        fields = plan_form(page.text)
        fields.update({"rule.weight.gain_3d.warning": "1", "reason": "Känslig för vätska"})
        preview = await http.post("/patients/p-1/care-plan/preview", data=fields)
        after_preview = plan_form(preview.text)
        versions_after_preview = await clinic.fetchval(
            "SELECT count(*) FROM care_plans WHERE patient_id = 'p-1'"
        )
        saved = await http.post("/patients/p-1/care-plan", data=after_preview)
    assert (csrf, "heart_failure", "82", "2") == (
        fields["csrf"],
        fields["template"],
        fields["personal.dry_weight"],
        plan_form(page.text)["rule.weight.gain_3d.warning"],
    )
    assert 'for="f-rule-weight-gain_3d-warning">Varning (ökning, kg)</label>' in page.text
    assert "<legend><code>weight.gain_3d</code>: Förändring av Vikt" in page.text
    assert "Källa: ESC 2021 heart failure guidelines" in page.text
    assert 200 == preview.status_code
    assert "Vad ändringen hade gett de senaste 90 dagarna" in preview.text
    assert preview.text.count("<code>weight.gain_3d</code></td>") >= 1  # a row: the proposal
    assert ("1", "Känslig för vätska") == (
        after_preview["rule.weight.gain_3d.warning"],
        after_preview["reason"],
    )
    assert 2 == versions_after_preview
    assert (303, "/patients/p-1?saved=3#plan") == (saved.status_code, saved.headers["location"])
    row = await clinic.fetchrow(
        "SELECT changed_by, reason, plan FROM care_plans WHERE patient_id = 'p-1' AND version = 3"
    )
    assert (
        "cl-a1",
        "Känslig för vätska",
        {
            "template": "heart_failure",
            "personal": {"dry_weight": 82.0},
            "overrides": {"weight.gain_3d": {"warning": 1.0}},
        },
    ) == (row["changed_by"], row["reason"], json.loads(row["plan"]))
    assert [
        ("cl-a1", "p-1", "view_patient", "allowed"),
        ("cl-a1", "p-1", "rules_backtest", "allowed"),
        ("cl-a1", "p-1", "view_patient", "allowed"),
        ("cl-a1", "p-1", "change_care_plan", "allowed"),
    ] == await log_rows(clinic)


async def test_plan_form_refuses_a_wrong_value_beside_its_field_and_saves_nothing(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """Urgent below warning, a k above its limit, no reason: said by the field, in sv and en."""
    await heart_failure_plan(clinic)
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        fields = plan_form((await http.get("/patients/p-1")).text)
        wrong = {
            **fields,
            "rule.heart_rate.high.urgent": "100",  # warning is 111: urgent must be higher
            "rule.weight.above_dry.k": "60",  # the model allows 1 to 50
            "reason": "fel",
        }
        preview = await http.post("/patients/p-1/care-plan/preview", data=wrong)
        save = await http.post("/patients/p-1/care-plan", data=wrong)
        no_reason = await http.post(
            "/patients/p-1/care-plan", data={**fields, "rule.weight.gain_3d.warning": "1.5"}
        )
        http.cookies.set("hm_lang", "en")
        english = await http.post("/patients/p-1/care-plan/preview", data=wrong)
    urgent_id, k_id = "f-rule-heart_rate-high-urgent", "f-rule-weight-above_dry-k"
    assert (422, 422) == (preview.status_code, save.status_code)
    for page in (preview, save):
        text = page.text
        assert "rätta de markerade fälten" in text
        assert (
            f'<span class="field-error" id="{urgent_id}-error">'
            "Brådskande måste vara på eller över varningsgränsen.</span>"
        ) in text
        assert f'<span class="field-error" id="{k_id}-error">Får vara högst 50.</span>' in text
        assert f'aria-invalid="true" aria-describedby="{urgent_id}-error"' in text
        kept = plan_form(text)
        assert ("100", "60", "fel") == (
            kept["rule.heart_rate.high.urgent"],
            kept["rule.weight.above_dry.k"],
            kept["reason"],
        )
    assert (422, True) == (no_reason.status_code, "Skriv varför planen ändras." in no_reason.text)
    assert "1.5" == plan_form(no_reason.text)["rule.weight.gain_3d.warning"]
    assert (422, True, True) == (
        english.status_code,
        "Urgent must be at or above the warning bound." in english.text,
        "Must be at most 50." in english.text,
    )
    assert 2 == await clinic.fetchval(
        "SELECT max(version) FROM care_plans WHERE patient_id = 'p-1'"
    )
    assert {"view_patient"} == {r[2] for r in await log_rows(clinic)}


async def test_alert_page_explains_charts_and_resolves_with_the_actionable_answer(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """Sentence, chart with the rule's window, history; resolve asks "actionable?" and keeps it."""
    await reading(clinic, "cuff-1", "p-1", "blood_pressure", NOW, systolic=170, diastolic=90)
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW)
    await clinic.execute(
        "UPDATE alerts SET opening_explanation = jsonb_set(opening_explanation, '{sentence}', "
        "'\"systolic 170 mmHg, at or above the warning bound 160; plan v1\"') WHERE id = $1",
        alert_id,
    )
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-a1")
        page = await http.get(f"/alerts/{alert_id}")
        unanswered = await http.post(
            f"/alerts/{alert_id}/resolve", data={"note": "ringt", "csrf": csrf}
        )
        resolved = await http.post(
            f"/alerts/{alert_id}/resolve",
            data={"note": "ringt patienten", "actionable": "yes", "csrf": csrf},
        )
        after = await http.get(resolved.headers["location"])
    assert 200 == page.status_code
    assert "systolic 170 mmHg, at or above the warning bound 160; plan v1" in page.text
    assert 'class="window"' in page.text and "Regelns fönster" in page.text
    assert "Var larmet åtgärdbart?" in page.text
    assert (303, f"/alerts/{alert_id}?alert={alert_id}&action=resolve&outcome=invalid") == (
        unanswered.status_code,
        unanswered.headers["location"],
    )
    assert 303 == resolved.status_code
    assert "Larmet är avslutat." in after.text and "<td>avslutat</td>" in after.text
    assert f"Larm {alert_id} är avslutat." in after.text
    row = await clinic.fetchrow(
        "SELECT status, actionable, resolution_note FROM alerts WHERE id = $1", alert_id
    )
    assert ("resolved", True, "ringt patienten") == tuple(row)
    actions = [r[2] for r in await log_rows(clinic)]
    assert ["view_alert", "resolve_alert", "view_alert"] == actions  # a refused form: no read


async def test_alert_page_and_inbox_speak_the_pages_language(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """A Swedish page shows the Swedish sentence and event labels, an English one the English."""
    await reading(clinic, "cuff-1", "p-1", "blood_pressure", NOW, systolic=185, diastolic=90)
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW, seen_after=timedelta(1))
    rule = ThresholdRule(
        id="systolic.high", quantity=Quantity.SYSTOLIC, direction="high", warning=160, urgent=180
    )
    reading_185 = StoredReading(NOW, "cuff-1", Metric.BLOOD_PRESSURE, {Quantity.SYSTOLIC: 185.0})
    judged = assess(rule, Plan(1, (rule,), {}), History([reading_185]), NOW)
    why = rows.explanation(judged.sentences(), judged.facts, 1)
    await clinic.execute(
        "UPDATE alerts SET opening_explanation = $2::jsonb, latest_explanation = $2::jsonb "
        "WHERE id = $1",
        alert_id,
        json.dumps(why),
    )
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        sv_page, sv_inbox = await http.get(f"/alerts/{alert_id}"), await http.get("/inbox/rows")
        http.cookies.set("hm_lang", "en")
        en_page, en_inbox = await http.get(f"/alerts/{alert_id}"), await http.get("/inbox/rows")
    swedish = (
        "systoliskt 185 mmHg, på eller över gränsen 180 mmHg för brådskande; plan v1: varning "
        "vid 160 mmHg eller mer, brådskande vid 180 mmHg eller mer"
    )
    english = (
        "systolic 185 mmHg, at or above the urgent bound of 180 mmHg; plan v1: warning at "
        "160 mmHg or more, urgent at 180 mmHg or more"
    )
    assert english == why["sentence"]
    assert (True, True, False) == (
        swedish in sv_page.text,
        swedish in sv_inbox.text,
        english in sv_page.text or english in sv_inbox.text,
    )
    assert (True, True, False) == (
        english in en_page.text,
        english in en_inbox.text,
        swedish in en_page.text or swedish in en_inbox.text,
    )
    assert (True, True) == ("<td>öppnat</td>" in sv_page.text, "<td>kvitterat</td>" in sv_page.text)
    assert (True, True) == (
        "<td>opened</td>" in en_page.text,
        "<td>acknowledged</td>" in en_page.text,
    )


async def test_my_patients_lists_the_team_with_last_readings_and_logs_each(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """Only the team's patients, the last reading per metric; each listed patient logged."""
    await reading(
        clinic,
        "cuff-1",
        "p-1",
        "blood_pressure",
        NOW - timedelta(hours=2),
        systolic=142,
        diastolic=88,
    )
    await reading(clinic, "oxi-2", "p-2", "spo2", NOW, gateway="gw-2", spo2=95)
    await alert(clinic, "p-3", "vc-a", "systolic.high", NOW, severity="urgent")
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        page = await http.get("/patients")
    assert 200 == page.status_code
    assert "142/88 mmHg" in page.text
    assert "/patients/p-1" in page.text and "/patients/p-3" in page.text
    assert "p-2" not in page.text
    assert "1 brådskande" in page.text
    assert page.text.index("/patients/p-3") < page.text.index("/patients/p-1")  # urgent first
    assert [
        ("cl-a1", "p-3", "list_patients", "allowed"),
        ("cl-a1", "p-1", "list_patients", "allowed"),
    ] == await log_rows(clinic)


async def test_access_review_is_for_reviewers_logged_exported_and_checked(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """403 (logged) for a clinician; a reviewer sees reads and attempts, exports CSV, checks."""
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-b1")
        await http.get("/patients/p-1")  # another team's patient: a denied attempt
        refused = await http.get("/access-review/patient?id=p-1")
        await sign_in(http, clinic, "cl-a1")
        await http.get("/patients/p-1")
        csrf = await sign_in(http, clinic, "rv-1")
        landing = await http.get("/access-review")
        of_patient = await http.get("/access-review/patient?id=p-1")
        exported = await http.get("/access-review/patient/export.csv?id=p-1")
        drawn = await http.post(
            "/access-review/checks",
            data={"scope": "patient", "subject_id": "p-1", "csrf": csrf},
        )
        check_url = drawn.headers["location"]
        check = await http.get(check_url)
        closed = await http.post(
            check_url,
            data={"checked": "vårdrelation i journalen", "outcome": "follow_up", "csrf": csrf},
        )
        again = await http.post(
            check_url, data={"checked": "igen", "outcome": "no_remarks", "csrf": csrf}
        )
        done = await http.get(check_url)
    assert 403 == refused.status_code
    assert 200 == landing.status_code and "Nekade försök" in landing.text
    assert "Nurse B1" in landing.text
    assert 200 == of_patient.status_code
    assert "Åtkomst till patient p-1" in of_patient.text
    assert "nekad" in of_patient.text and "tillåten" in of_patient.text
    assert exported.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(exported.text)))
    assert [
        ("rv-1", "review_access_log", "allowed"),  # the reviewer's own looks: this view,
        ("rv-1", "review_access_log", "allowed"),  # and the landing's denied attempts
        ("cl-a1", "view_patient", "allowed"),
        ("cl-b1", "review_access_log", "denied"),  # an attempt at p-1's log is one at p-1
        ("cl-b1", "view_patient", "denied"),
    ] == [(r["clinician_id"], r["action"], r["outcome"]) for r in parsed]
    assert 303 == drawn.status_code and 200 == check.status_code
    assert "En patients logg" in check.text
    assert (303, 409) == (closed.status_code, again.status_code)
    assert "Följs upp" in done.text and "vårdrelation i journalen" in done.text
    log = await log_rows(clinic)
    assert ("cl-b1", None, "review_access_log", "denied") in log
    reviewer = [r for r in log if r[0] == "rv-1"]
    assert ("rv-1", "p-1", "review_access_log", "allowed") in reviewer
    assert ("rv-1", "p-1", "export_access_log", "allowed") in reviewer


async def test_follow_up_page_shows_the_teams_figures_without_patient_reads(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """The follow-up's charts in Swedish; aggregates only, so nothing is access-logged."""
    await alert(
        clinic,
        "p-1",
        "vc-a",
        "systolic.high",
        NOW - timedelta(hours=1),
        seen_after=timedelta(minutes=12),
    )
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        page = await http.get("/follow-up?weeks=4")
        http.cookies.set("hm_lang", "en")
        english = await http.get("/follow-up?weeks=4")
    assert 200 == page.status_code
    for title in (
        "Larm per patientvecka",
        "Tid till kvittering (minuter)",
        "Andel åtgärdbara larm per regel",
        "Följsamhet: andel dagar med mätning",
    ):
        assert title in page.text
    assert "12 min" in page.text  # the week's median time to acknowledge
    nothing_answered = page.text.split('id="actionable-rule"')[1].split("</figure>")[0]
    assert '<p class="chart-empty">Inga data under perioden.</p>' in nothing_answered
    assert "Teamets larm och mätningar de senaste 4 veckorna" in page.text
    assert "p-1" not in page.text
    assert "Alerts per patient-week" in english.text
    assert [] == await log_rows(clinic)


# --- lifecycle2: another team's id on a page is an HTML page, not the API's JSON -----------


async def test_another_teams_alert_or_patient_on_a_page_is_a_not_found_page_logged_denied(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """cl-b1 opening vc-a's alert or patient, or acknowledging the alert from its page:
    a 404 page in their language (Swedish, or English when asked), no data of it, each
    attempt a denied row; the API's route still answers JSON."""
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW - timedelta(hours=1))
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-b1")
        swedish = await http.get(f"/alerts/{alert_id}")
        english = await http.get("/patients/p-1", headers={"Accept-Language": "en"})
        posted = await http.post(f"/alerts/{alert_id}/acknowledge", data={"csrf": csrf})
        api = await http.get(f"/api/v1/alerts/{alert_id}")
    assert (404, 404, 404) == (swedish.status_code, english.status_code, posted.status_code)
    assert swedish.headers["content-type"].startswith("text/html")
    assert 'lang="sv"' in swedish.text and f"Det finns inget larm {alert_id}" in swedish.text
    assert 'lang="en"' in english.text and "There is no patient p-1" in english.text
    assert "Nurse B1" in swedish.text  # the page of a signed-in user, with the navigation
    assert "systolic" not in swedish.text.lower()
    assert "Det finns inget larm" in posted.text
    assert "no-store" == swedish.headers["cache-control"]
    assert (404, {"detail": "no such alert"}) == (api.status_code, api.json())
    assert [
        ("cl-b1", "p-1", "view_alert", "denied"),
        ("cl-b1", "p-1", "view_patient", "denied"),
        ("cl-b1", "p-1", "acknowledge_alert", "denied"),
        ("cl-b1", "p-1", "view_alert", "denied"),
    ] == await log_rows(clinic)


# --- web-forms: every action is a form that works without JavaScript ----------------------


#: A valid form of each alert action.
FIELDS: dict[str, dict[str, str]] = {
    "acknowledge": {},
    "comment": {"text": "x"},
    "assign": {"clinician_id": "rv-1"},
    "snooze": {"minutes": "30", "reason": "x"},
    "resolve": {"note": "x", "actionable": "yes"},
}


async def _events(db: asyncpg.Connection, alert_id: int) -> list[str]:
    rows = await db.fetch(
        "SELECT kind FROM alert_events WHERE alert_id = $1 AND actor = 'clinician' ORDER BY id",
        alert_id,
    )
    return [r["kind"] for r in rows]


async def test_inbox_forms_act_without_javascript_and_say_what_came_of_it(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """Each Inbox form posts, 303s back to the Inbox with a notice, and changes the alert."""
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW - timedelta(hours=1))
    steps = [
        ("acknowledge", {}),
        ("comment", {"text": "ringer i eftermiddag"}),
        ("assign", {"clinician_id": "rv-1"}),
        ("snooze", {"minutes": "30", "reason": "väntar på ommätning"}),
        ("resolve", {"note": "ringt patienten"}),  # no "actionable?" answer: refused
        ("resolve", {"note": "ringt patienten", "actionable": "no"}),
        ("resolve", {"note": "igen", "actionable": "yes"}),  # already resolved: the API's 409
    ]
    seen: list[tuple[int, str, str]] = []
    pages: dict[str, str] = {}
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-a1")
        inbox = await http.get("/")
        for action, fields in steps:
            posted = await http.post(
                f"/alerts/{alert_id}/{action}", data={"csrf": csrf, "back": "inbox", **fields}
            )
            page = await http.get(posted.headers["location"])
            pages.setdefault(action, page.text)
            notice = page.text.split('id="action-notice">')[1].split("</p>")[0]
            seen.append(
                (posted.status_code, posted.headers["location"].split("&outcome=")[1], notice)
            )
        http.cookies.set("hm_lang", "en")
        english = await http.get(posted.headers["location"])
    assert f'<form method="post" action="/alerts/{alert_id}/acknowledge"' in inbox.text
    assert f'name="csrf" value="{csrf}"' in inbox.text
    assert [
        (303, "done", f"Larm {alert_id} är kvitterat."),
        (303, "done", f"Kommentaren är sparad i larm {alert_id}."),
        (303, "done", f"Larm {alert_id} är tilldelat."),
        (303, "done", f"Larm {alert_id} är snoozat."),
        (
            303,
            "invalid",
            f"Larm {alert_id} är inte avslutat: svara på om det var åtgärdbart, och skriv vad "
            "som gjordes.",
        ),
        (303, "done", f"Larm {alert_id} är avslutat."),
        (303, "resolved", f"Larm {alert_id} är redan avslutat."),
    ] == seen
    assert f"Alert {alert_id} is already resolved." in english.text
    assignee = await clinic.fetchval("SELECT name FROM clinicians WHERE id = 'rv-1'")
    assert f"tilldelat {assignee}" in pages["assign"]  # by name, not by id
    row = await clinic.fetchrow(
        "SELECT status, acknowledged_by, assigned_to, actionable, resolution_note FROM alerts "
        "WHERE id = $1",
        alert_id,
    )
    assert ("resolved", "cl-a1", "rv-1", False, "ringt patienten") == tuple(row)
    assert ["acknowledged", "commented", "assigned", "snoozed", "resolved"] == await _events(
        clinic, alert_id
    )
    changes = [r[2] for r in await log_rows(clinic) if r[2] != "list_alerts"]
    assert [
        "acknowledge_alert",
        "comment_alert",
        "assign_alert",
        "snooze_alert",
        "resolve_alert",
    ] == changes  # the refused ones wrote nothing, as the API's refusals do not


async def test_the_alert_pages_forms_go_back_to_it_with_the_apis_refusal(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """The Alert page's forms (assign, comment) go back to it; snoozing an urgent alert
    there answers with the API's refusal in words."""
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW, severity="urgent")
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-a1")
        page = await http.get(f"/alerts/{alert_id}")
        assigned = await http.post(
            f"/alerts/{alert_id}/assign",
            data={"csrf": csrf, "back": "alert", "clinician_id": "rv-1"},
        )
        commented = await http.post(
            f"/alerts/{alert_id}/comment", data={"csrf": csrf, "back": "alert", "text": "ringer"}
        )
        after_comment = await http.get(commented.headers["location"])
        posted = await http.post(
            f"/alerts/{alert_id}/snooze",
            data={"csrf": csrf, "back": "alert", "minutes": "30", "reason": "senare"},
        )
        page = await http.get(posted.headers["location"])
        api = await http.post(
            f"/api/v1/alerts/{alert_id}/snooze",
            json={"minutes": 30, "reason": "senare"},
            headers={"X-CSRF-Token": csrf},
        )
    for action in ("assign", "comment"):  # snooze is not offered for an urgent alert
        assert f'action="/alerts/{alert_id}/{action}"' in page.text
    assert f'action="/alerts/{alert_id}/snooze"' not in page.text
    assert (
        f"/alerts/{alert_id}?alert={alert_id}&action=assign&outcome=done"
        == (assigned.headers["location"])
    )
    assert f"Kommentaren är sparad i larm {alert_id}." in after_comment.text
    assert (303, f"/alerts/{alert_id}?alert={alert_id}&action=snooze&outcome=urgent") == (
        posted.status_code,
        posted.headers["location"],
    )
    assert (
        f'role="alert" id="action-notice">Larm {alert_id} är brådskande och kan inte snoozas: '
        "kvittera det i stället.</p>"
    ) in page.text
    assert (409, "an urgent alert cannot be snoozed: acknowledge it instead") == (
        api.status_code,
        api.json()["detail"],
    )
    assert ["assigned", "commented"] == await _events(clinic, alert_id)


async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """Each action posted without the form's csrf field: 403, no event, no access-log row."""
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW - timedelta(hours=1))
    async with web_client(dsn) as (http, _):
        await sign_in(http, clinic, "cl-a1")
        codes = {
            action: (await http.post(f"/alerts/{alert_id}/{action}", data=data)).status_code
            for action, data in FIELDS.items()
        }
        wrong = await http.post(
            f"/alerts/{alert_id}/acknowledge", data={"csrf": "not-the-token", "back": "inbox"}
        )
    assert dict.fromkeys(FIELDS, 403) == codes
    assert 403 == wrong.status_code
    row = await clinic.fetchrow(
        "SELECT status, acknowledged_by, assigned_to, snoozed_until FROM alerts WHERE id = $1",
        alert_id,
    )
    assert ("open", None, None, None) == tuple(row)
    assert [] == await _events(clinic, alert_id)
    assert [] == await log_rows(clinic)


async def test_another_teams_alert_by_form_is_unknown_and_logged_denied(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """cl-b1 posting each form for vc-a's alert: the not-found page, each attempt denied."""
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW - timedelta(hours=1))
    async with web_client(dsn) as (http, _):
        csrf = await sign_in(http, clinic, "cl-b1")
        answers = [
            await http.post(
                f"/alerts/{alert_id}/{action}", data={"csrf": csrf, "back": "inbox", **data}
            )
            for action, data in FIELDS.items()
        ]
    assert [404] * 5 == [a.status_code for a in answers]
    assert all(f"Det finns inget larm {alert_id}" in a.text for a in answers)
    assert [("cl-b1", "p-1", f"{action}_alert", "denied") for action in FIELDS] == await log_rows(
        clinic
    )
    assert [] == await _events(clinic, alert_id)


async def test_a_form_posted_after_the_session_ended_signs_in_back_to_its_page(
    clinic: asyncpg.Connection, dsn: str
) -> None:
    """No session: the form's post goes to sign-in with its page as the return, not its path."""
    alert_id = await alert(clinic, "p-1", "vc-a", "systolic.high", NOW - timedelta(hours=1))
    async with web_client(dsn) as (http, _):
        from_page = await http.post(
            f"/alerts/{alert_id}/acknowledge",
            data={"csrf": "x", "back": "alert"},
            headers={"Referer": f"https://testserver/alerts/{alert_id}?x=1"},
        )
        elsewhere = await http.post(
            f"/alerts/{alert_id}/acknowledge",
            data={"csrf": "x"},
            headers={"Referer": "https://evil.example/alerts/1"},
        )
    assert (303, f"/login?next=/alerts/{alert_id}") == (
        from_page.status_code,
        from_page.headers["location"],
    )
    assert "/login?next=/" == elsewhere.headers["location"]
    assert [] == await _events(clinic, alert_id)
