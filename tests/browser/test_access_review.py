"""The access-log review in Chromium: a reviewer (role ``reviewer``) sees who read a patient
and a denied attempt made minutes before, exports it as CSV and records a sample check."""

from __future__ import annotations

import csv
import io
import re

import asyncpg
from playwright.async_api import Page, expect

from tests.browser.conftest import NewPage, Shot, basic_a11y, sign_in
from tests.conftest import RunningService


async def test_a_reviewer_sees_reads_and_a_denied_attempt_exports_and_checks(
    page: Page,
    new_page: NewPage,
    web_service: RunningService,
    db: asyncpg.Connection,
    shot: Shot,
) -> None:
    site = web_service.url.replace("127.0.0.1", "localhost")
    await sign_in(page, web_service, "anna")  # the nurse reads her patient, then tries more
    await page.goto(site + "/patients/p-1")
    await expect(page.get_by_role("heading", name="Patient p-1", level=1)).to_be_visible()
    denied = await page.goto(site + "/access-review/patient?id=p-1")
    assert denied is not None and 403 == denied.status
    await expect(page.get_by_role("link", name="Åtkomstlogg")).to_have_count(0)

    reviewer = await new_page()  # another person, in a browser of their own
    await sign_in(reviewer, web_service, "rita")
    await expect(reviewer.get_by_text("Inloggad som Granskare R")).to_be_visible()
    await reviewer.get_by_role("link", name="Åtkomstlogg").click()
    await expect(
        reviewer.get_by_role("heading", name="Granskning av åtkomstloggen", level=1)
    ).to_be_visible()
    await basic_a11y(reviewer)
    await reviewer.get_by_label("Patient", exact=True).fill("p-1")
    await reviewer.get_by_label("Patient", exact=True).press("Enter")
    await expect(reviewer.get_by_role("heading", name="Åtkomst till patient p-1")).to_be_visible()
    rows = reviewer.locator("table.access-log tbody tr")
    read = rows.filter(has_text="view_patient")
    tried = rows.filter(has_text="nekad")
    await expect(read).to_have_count(1)
    await expect(read).to_contain_text("Nurse A1")
    await expect(read).to_contain_text("tillåten")
    await expect(tried).to_have_count(1)
    await expect(tried).to_contain_text("Nurse A1")
    await expect(tried).to_contain_text("review_access_log")
    await basic_a11y(reviewer)
    await shot(reviewer, "patient")

    async with reviewer.expect_download() as downloading:
        await reviewer.get_by_role("link", name="Exportera som CSV").click()
    download = await downloading.value
    assert download.suggested_filename.startswith("access-log-patient-p-1-")
    exported = list(csv.DictReader(io.StringIO((await download.path()).read_text("utf-8"))))
    seen = {(r["clinician_id"], r["patient_id"], r["action"], r["outcome"]) for r in exported}
    assert ("cl-a1", "p-1", "view_patient", "allowed") in seen
    assert [("cl-a1", "", "review_access_log", "denied", "p-1")] == [
        (r["clinician_id"], r["patient_id"], r["action"], r["outcome"], r["requested_id"])
        for r in exported
        if r["outcome"] == "denied"
    ]
    assert ("rv-1", "p-1", "review_access_log", "allowed") in seen  # the look just taken

    await reviewer.get_by_role("link", name="Åtkomstlogg").click()
    await reviewer.get_by_label("Slumpvis stickprov av läsningar").check()
    await reviewer.get_by_label("Antal i stickprovet").fill("5")
    await reviewer.get_by_role("button", name="Skapa kontroll").click()
    await expect(reviewer.get_by_role("heading", name="Kontroll", level=1)).to_be_visible()
    await expect(reviewer.locator("dd.status")).to_have_text("pågår")
    items = reviewer.get_by_role("heading", name=re.compile(r"^Rader i kontrollen \([1-5]\)$"))
    await expect(items).to_be_visible()
    drawn = int((await items.inner_text()).split("(")[1].rstrip(")"))
    await expect(reviewer.locator("table.access-log tbody tr")).to_have_count(drawn)
    await reviewer.get_by_label("Vad kontrollerades?").fill("Fem läsningar mot vårdrelationen.")
    await reviewer.get_by_label("Utan anmärkning").check()
    await reviewer.get_by_label("Anteckning").fill("Alla inom vårdrelation.")
    await basic_a11y(reviewer)
    await reviewer.get_by_role("button", name="Registrera resultatet").click()
    await expect(reviewer.locator("dd.status")).to_have_text("klar: Utan anmärkning")
    await expect(reviewer.get_by_text("Fem läsningar mot vårdrelationen.")).to_be_visible()
    await shot(reviewer, "check")

    check = await db.fetchrow(
        "SELECT reviewer_id, scope, status, outcome, checked FROM access_checks"
    )
    assert ("rv-1", "sample", "done", "no_remarks") == tuple(check)[:4]
