"""The Alert page in Chromium: why it fired, the chart of the quantity with its description,
the history as it grows, and "was this alert actionable?" at resolve."""

from __future__ import annotations

import asyncpg
from playwright.async_api import Page, expect

from homemonitor.embedded import PrivateMosquitto
from tests.browser.conftest import Shot, alert_of, basic_a11y, breach, sign_in
from tests.conftest import RunningService


async def test_the_alert_page_explains_charts_and_keeps_the_history(
    page: Page,
    web_service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    shot: Shot,
) -> None:
    await breach(broker)
    await sign_in(page, web_service, "anna")
    alert_id = await alert_of(db)
    await page.get_by_role("link", name=f"Larm {alert_id} för patient p-1").click()
    await expect(
        page.get_by_role("heading", name=f"Larm {alert_id}: Brådskande", level=1)
    ).to_be_visible()
    sentence = await db.fetchval(
        "SELECT opening_explanation->'sentences'->>'sv' FROM alerts WHERE id = $1", alert_id
    )
    assert sentence.startswith("systoliskt 190 mmHg")  # the page is Swedish, so is the why
    await expect(page.locator("dd.sentence").first).to_have_text(sentence)

    chart = page.locator('svg[role="img"]').first
    described = await chart.get_attribute("aria-labelledby") or ""
    assert described.endswith("-desc")
    description = page.locator(f"desc#{described.split()[-1]}")
    await expect(description).to_contain_text("190")
    # the name a screen reader announces: the chart's title and that description
    title = await page.locator(f"#{described.split()[0]}").inner_text()
    await expect(page.get_by_role("img", name=title)).to_be_visible()
    await expect(chart.locator(".window")).not_to_have_count(0)  # the rule's window drawn

    events = page.locator("table.events tbody tr")
    await expect(events.first).to_contain_text("öppnat")
    opened = await events.count()
    await basic_a11y(page)
    await page.get_by_role("button", name="Kvittera").click()
    await expect(events).to_have_count(opened + 1)
    await expect(events.last).to_contain_text("kvitterat")
    await expect(events.last).to_contain_text("Nurse A1")
    await shot(page, "acknowledged")

    await page.get_by_label("Ja, det ledde till en åtgärd").check()
    await page.get_by_label("Vad gjordes?").fill("Ringde; ny tid hos läkaren i morgon.")
    await page.get_by_role("button", name="Avsluta larmet").click()
    await expect(page.get_by_text("Larmet är avslutat.")).to_be_visible()
    await expect(events.last).to_contain_text("avslutat")
    await basic_a11y(page)
    await shot(page, "resolved")
    row = await db.fetchrow("SELECT status, actionable FROM alerts WHERE id = $1", alert_id)
    assert ("resolved", True) == tuple(row)
