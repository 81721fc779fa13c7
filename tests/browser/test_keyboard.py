"""Keyboard only, in Chromium: the Inbox's actions are reached by Tab, each with a focus
one can see, and work by Enter; an axe-like basic check of every page a clinician opens."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from playwright.async_api import Page, expect

from homemonitor.embedded import PrivateMosquitto
from tests.browser.conftest import HAS_STREAM, HeldRows, Shot, alert_of, basic_a11y, breach, sign_in
from tests.conftest import RunningService

#: What has focus, by its visible text or label, and whether that focus shows: the
#: keyboard's :focus-visible, drawn as an outline of at least 2 px.
_FOCUSED_JS = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const name = (el.getAttribute("aria-label") || el.innerText || el.labels?.[0]?.innerText || "");
  return {
    name: name.trim().split("\\n")[0],
    visible: el.matches(":focus-visible") && style.outlineStyle !== "none"
      && parseFloat(style.outlineWidth) >= 2,
  };
}"""


async def _focus_settled(page: Page, *, within: float = 3.0) -> dict[str, Any]:
    """The focused element once its focus style shows, or as it is after ``within`` s (a
    loaded machine may paint the :focus-visible style a frame after the key press)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        focused: dict[str, Any] = await page.evaluate(_FOCUSED_JS)
        if focused["visible"] or asyncio.get_running_loop().time() > deadline:
            return focused
        await asyncio.sleep(0.05)


async def tab_to(page: Page, name: str, *, limit: int = 40) -> list[str]:
    """Press Tab until the element named ``name`` has focus; every stop's focus must show."""
    passed: list[str] = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await _focus_settled(page)
        assert focused["visible"], f"focus not visible on {focused['name']!r}"
        passed.append(focused["name"])
        if focused["name"] == name:
            return passed
    raise AssertionError(f"{name!r} not reached by Tab; passed {passed}")


async def test_the_inbox_by_keyboard_and_every_page_passes_a_basic_check(
    page: Page,
    web_service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
    shot: Shot,
) -> None:
    site = web_service.url.replace("127.0.0.1", "localhost")
    await breach(broker)
    await sign_in(page, web_service, "anna")
    alert_id = await alert_of(db)
    await page.reload()  # the page as it is first opened, focus at its start
    alert = page.locator("li.alert")
    await expect(alert).to_have_count(1)

    order = await tab_to(page, "Kvittera")
    assert "Hoppa till innehållet" == order[0]  # the skip link first, then the header
    assert order.index("Inkorg") < order.index(f"Larm {alert_id} för patient p-1")
    await shot(page, "focus")
    await page.keyboard.press("Enter")
    await expect(alert.locator(".status")).to_have_text("kvitterat")
    await expect(page.locator("#announce")).to_have_text("Klart: Kvittera.")

    after = await tab_to(page, "Kommentera")  # the actions' <summary>s, in reading order
    assert ["Avsluta", "Tilldela"] == [n for n in after if n in ("Avsluta", "Tilldela")]
    await page.keyboard.press("Enter")  # opens the comment's <details>
    await tab_to(page, "Kommentar", limit=1)
    await page.keyboard.type("Ringer patienten efter lunch.")
    await tab_to(page, "Kommentera", limit=1)  # its submit button
    await page.keyboard.press("Enter")
    await expect(page.locator("#announce")).to_have_text("Klart: Kommentera.")
    comments = await db.fetch(
        "SELECT clinician_id, details->>'text' AS text FROM alert_events "
        "WHERE alert_id = $1 AND kind = 'commented'",
        alert_id,
    )
    assert [("cl-a1", "Ringer patienten efter lunch.")] == [tuple(r) for r in comments]
    await basic_a11y(page)

    for path, heading in [
        ("/patients", "Mina patienter"),
        ("/patients/p-1", "Patient p-1"),
        (f"/alerts/{alert_id}", f"Larm {alert_id}: Brådskande"),
        ("/follow-up", "Uppföljning"),
        ("/lang/en", "Inbox"),  # and in English
    ]:
        await page.goto(site + path)
        await expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        await basic_a11y(page)
        await shot(page, path.strip("/").replace("/", "-"))


@pytest.mark.skipif(not HAS_STREAM, reason="needs the live stream (the page polls without it)")
async def test_a_refresh_that_lands_while_one_tabs_keeps_the_focus_where_it_went(
    page: Page,
    web_service: RunningService,
    broker: PrivateMosquitto,
    db: asyncpg.Connection,
) -> None:
    """The stream's catch-up refresh set off when nothing in the list had focus; while its
    rows were on their way the nurse tabbed to Kvittera. The rows that replace the list keep
    her on that button, so her Enter acknowledges (it used to fall on the page's body)."""
    rows = HeldRows()
    await breach(broker)
    await sign_in(page, web_service, "anna")
    alert_id = await alert_of(db)
    await rows.install(page)
    await page.reload()
    await rows.wait_held()  # the catch-up refresh, asked with focus nowhere
    await tab_to(page, "Kvittera")
    await page.evaluate("() => { window.before = document.activeElement; }")
    rows.release()
    await page.wait_for_function("() => !document.contains(window.before)", timeout=10_000)
    focused = await page.evaluate("() => document.activeElement.id")
    assert f"acknowledge-{alert_id}-submit" == focused
    await page.keyboard.press("Enter")
    await expect(page.locator("li.alert .status")).to_have_text("kvitterat")
