"""The demo without an identity provider: a login that says what it is; keyboard and English."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from playwright.async_api import Page, expect

from homemonitor import registry
from homemonitor.embedded import PrivateMosquitto
from tests.browser.conftest import Shot
from tests.conftest import REGISTRY, RunningService, settings_for


@pytest.fixture
async def demo_service(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto
) -> AsyncIterator[RunningService]:
    await registry.apply(db, registry.parse(REGISTRY))
    svc = RunningService(settings_for(dsn, broker, web_demo_login=True))
    await svc.start()
    yield svc
    await svc.stop()


async def test_demo_login_by_keyboard_then_english(
    page: Page, demo_service: RunningService, shot: Shot
) -> None:
    site = demo_service.url.replace("127.0.0.1", "localhost")
    await page.goto(site + "/")
    await expect(page.get_by_text("Endast för demo: ingen identitet kontrolleras.")).to_be_visible()
    await shot(page, "login")

    await page.keyboard.press("Tab")  # the skip link comes first
    await expect(page.get_by_role("link", name="Hoppa till innehållet")).to_be_focused()
    await page.get_by_label("Logga in som").select_option(label="Nurse B1 (Vårdcentral B)")
    await page.get_by_label("Logga in som").focus()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Logga in (demo)")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Inkorg", level=1)).to_be_visible()
    await expect(page.get_by_text("Inloggad som Nurse B1")).to_be_visible()

    await page.get_by_role("link", name="English").click()
    await expect(page.get_by_role("heading", name="Inbox", level=1)).to_be_visible()
    assert "en" == await page.locator("html").get_attribute("lang")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    await page.goto(site + "/")
    await expect(page).to_have_url(site + "/login?next=/")
