"""A clinician's morning in Chromium: sign in through the region's provider, watch an alert
arrive when a reading breaches, acknowledge it, resolve it with a note."""

from __future__ import annotations

import re

import asyncpg
import pytest
from playwright.async_api import Page, expect

from homemonitor.embedded import PrivateMosquitto
from tests.browser.conftest import HAS_STREAM, HeldRows, Shot, breach, sign_in
from tests.conftest import RunningService


async def test_an_alert_arrives_is_acknowledged_and_resolved(
    page: Page,
    web_service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    shot: Shot,
) -> None:
    await page.goto(web_service.url.replace("127.0.0.1", "localhost") + "/login")
    await shot(page, "login")
    await sign_in(page, web_service, "anna")
    await expect(page.get_by_text("Inloggad som Nurse A1")).to_be_visible()
    await expect(page.get_by_text("Inga aktiva larm.")).to_be_visible()
    mode = "Uppdateras direkt." if HAS_STREAM else "Uppdateras varje sekund."
    await expect(page.locator("#live-mode")).to_have_text(mode)

    await breach(broker)
    alert = page.locator("li.alert")
    await expect(alert).to_have_count(1, timeout=15_000)  # no reload: the page refreshed
    alert_id = int(await alert.get_attribute("data-alert-id") or 0)
    await expect(alert.get_by_text("Brådskande", exact=True)).to_be_visible()
    await expect(alert.locator(".sentence")).to_contain_text("systoliskt 190 mmHg")  # Swedish
    await expect(page.locator("#announce")).to_contain_text(f"Nytt larm: Larm {alert_id}")
    await expect(page.get_by_role("heading", name="Mina (1)")).to_be_visible()
    await shot(page, "inbox")

    await alert.get_by_role("button", name="Kvittera").click()
    await expect(alert.locator(".status")).to_have_text("kvitterat")
    await expect(alert.get_by_role("button", name="Kvittera")).to_have_count(0)
    await expect(alert.get_by_role("link", name=f"Larm {alert_id} för patient p-1")).to_be_focused()

    await alert.get_by_text("Avsluta", exact=True).click()  # the <details> summary
    await alert.get_by_label("Anteckning").fill("Ringde patienten; dosen justerad.")
    await alert.get_by_label("Ja", exact=True).check()  # "did it lead to an action?" is asked
    await shot(page, "resolving")
    await alert.get_by_role("button", name="Avsluta med anteckning").click()
    await expect(page.get_by_text("Inga aktiva larm.")).to_be_visible()
    await expect(page.locator("#announce")).to_contain_text("Klart")
    await shot(page, "resolved")

    await page.get_by_role("button", name="Logga ut").click()  # here, then at the provider
    await page.get_by_role("button", name=re.compile("Yes, sign me out", re.I)).click()
    await expect(page.get_by_text("Du är utloggad.")).to_be_visible()

    row = await db.fetchrow(
        "SELECT status, acknowledged_by, resolved_by, resolution_note FROM alerts WHERE id = $1",
        alert_id,
    )
    assert ("resolved", "cl-a1", "cl-a1", "Ringde patienten; dosen justerad.") == tuple(row)
    assert await db.fetchval("SELECT actionable FROM alerts WHERE id = $1", alert_id)
    actions = await db.fetch("SELECT DISTINCT action FROM access_log WHERE clinician_id = 'cl-a1'")
    assert {"list_alerts", "acknowledge_alert", "resolve_alert"} <= {r["action"] for r in actions}


@pytest.mark.skipif(not HAS_STREAM, reason="needs the live stream (the page polls without it)")
async def test_an_alert_that_commits_while_the_rows_are_being_fetched_still_appears(
    page: Page,
    web_service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
) -> None:
    """The stream's catch-up refresh read the rows before the alert committed, and the
    alert's own event came while that refresh was under way: the Inbox fetches once more
    instead of folding the event into the stale refresh (it would wait for the next poll)."""
    rows = HeldRows()
    await sign_in(page, web_service, "anna")
    await rows.install(page)
    await page.reload()  # the stream opens and its catch-up refresh is held
    await rows.wait_held()  # the catch-up's rows, read, not yet shown
    await page.evaluate(  # a second stream of the team's, to see when the event is out
        "() => { window.seen = 0; window.opened = false;"
        " const s = new EventSource('/api/v1/alerts/stream');"
        " s.addEventListener('open', () => { window.opened = true; });"
        " s.addEventListener('alert', () => { window.seen += 1; }); }"
    )
    # open: it starts after every event committed so far, so the breach's is not missed
    await page.wait_for_function("() => window.opened", timeout=15_000)
    await breach(broker)
    await page.wait_for_function("() => window.seen > 0", timeout=15_000)
    rows.release()
    await expect(page.locator("li.alert")).to_have_count(1, timeout=10_000)
