"""A district nurse changes a care plan in Chromium: edit a bound in the plan's form into a
new version with a reason, see what the change would have raised over the last 90 days,
save, see it listed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from playwright.async_api import Page, expect

from tests.browser.conftest import Shot, basic_a11y, sign_in
from tests.conftest import RunningService
from tests.test_web_queries import reading

REASON = "Trycket ligger kring 170; läkaren vill se det tidigare."


async def test_plan_edited_into_a_new_version_after_a_backtest_preview(
    page: Page, web_service: RunningService, db: asyncpg.Connection, shot: Shot
) -> None:
    now = datetime.now(UTC)
    for days in (3, 12, 33, 61):  # systolic 170: a warning today, urgent if urgent is 165
        at = now - timedelta(days=days)
        await reading(db, "cuff-1", "p-1", "blood_pressure", at, systolic=170, diastolic=95)
    await sign_in(page, web_service, "anna")
    await page.goto(web_service.url.replace("127.0.0.1", "localhost") + "/patients/p-1")
    await expect(page.get_by_role("heading", name="Patient p-1", level=1)).to_be_visible()
    plan = page.locator("#plan-section")
    await expect(plan.get_by_text("Version 1", exact=True)).to_be_visible()
    await basic_a11y(page)

    form = page.locator("#plan-form")  # the fields; the YAML box is folded away
    await expect(page.get_by_label("Vårdplan (YAML)")).not_to_be_visible()
    await expect(form.get_by_label("Mall (diagnos)")).to_have_value("")  # own bounds only
    high = form.get_by_role("group", name="systolic.high: Gräns för Systoliskt blodtryck, hög")
    urgent = high.get_by_label("Brådskande (mmHg)")
    await expect(urgent).to_have_value("180")
    await expect(high.get_by_label("Varning (mmHg)")).to_have_value("160")
    await urgent.fill("165")
    await form.get_by_label("Varför ändras planen?").fill(REASON)
    await form.get_by_role("button", name="Förhandsgranska mot de senaste 90 dagarna").click()

    preview = page.locator("#preview")
    title = "Vad ändringen hade gett de senaste 90 dagarna"
    await expect(preview.get_by_role("heading", name=title)).to_be_visible()
    current = preview.get_by_role("row", name="Nuvarande")
    proposed = preview.get_by_role("row", name="Föreslagen")
    # columns: plan, warning, urgent, total: today's plan raised no urgent, the proposal does
    await expect(current.locator("td").nth(1)).to_have_text("0")
    assert int(await proposed.locator("td").nth(1).inner_text()) >= 1
    await expect(preview.locator(".preview-rows code").first).to_be_visible()
    # nothing is saved by a preview, and the edit and its reason are kept for the save
    assert 1 == await db.fetchval("SELECT max(version) FROM care_plans WHERE patient_id = 'p-1'")
    await expect(form.get_by_label("Varför ändras planen?")).to_have_value(REASON)
    await expect(urgent).to_have_value("165")
    assert "urgent: 165" in await page.get_by_label("Vårdplan (YAML)").input_value()
    await basic_a11y(page)
    await shot(page, "preview")

    await form.get_by_role("button", name="Spara som ny version").click()
    await expect(page.get_by_role("status")).to_have_text("Version 2 är sparad.")
    await expect(plan.get_by_text("Version 2", exact=True)).to_be_visible()
    await plan.get_by_text("Versioner (2)").click()  # the <details> of every version
    versions = plan.locator("details li")
    await expect(versions).to_have_count(2)
    await expect(versions.first).to_contain_text("Version 2: Ändrad")
    await expect(versions.first).to_contain_text(f"av cl-a1: {REASON}")
    await expect(versions.last).to_contain_text("Version 1: Ändrad")
    await shot(page, "saved")

    row = await db.fetchrow(
        "SELECT version, changed_by, reason, plan::text AS plan FROM care_plans "
        "WHERE patient_id = 'p-1' ORDER BY version DESC LIMIT 1"
    )
    assert (2, "cl-a1", REASON) == (row["version"], row["changed_by"], row["reason"])
    assert '"urgent": 165' in row["plan"]
    actions = await db.fetch(
        "SELECT DISTINCT action FROM access_log WHERE clinician_id = 'cl-a1' AND patient_id = 'p-1'"
    )
    assert {"view_patient"} <= {r["action"] for r in actions}
