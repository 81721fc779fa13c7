"""The browser test harness: Debian's Chromium driven by Playwright, no browser download.

``page`` is a fresh browser page (Chromium at /usr/bin/chromium, headless, with the
flags this machine needs); it may talk to localhost only: any other request is aborted (a
closed network, as a hospital's may be: the app must need nothing from outside).
``shot(page, name)`` saves a screenshot to tests/browser/artifacts/ (gitignored; the best
are copied to docs/screenshots/ for the README).
``web_service`` runs the whole service (worker, API, web app) with single sign-on through
the test OpenID provider, registry applied, cl-a1 known by anna's HSA id.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from homemonitor import registry
from homemonitor.embedded import PrivateMosquitto, free_port
from tests.conftest import (
    REGISTRY,
    OidcProvider,
    RunningService,
    running_oidc_provider,
    settings_for,
)

CHROMIUM = Path("/usr/bin/chromium")
#: As root, in a container, on a closed network (see the machine notes in docs/web.md).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
#: Whether the service has the live alert stream (helper notify's api/stream.py). With it,
#: the Inbox must update from the stream alone: the fallback polling is set too slow to help.
HAS_STREAM = importlib.util.find_spec("homemonitor.api.stream") is not None
Shot = Callable[[Page, str], Awaitable[Path]]


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: run 'make test-deps' (Debian's chromium package)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def _local_only(route: Route) -> None:
    host = urlsplit(route.request.url).hostname
    if host in ("localhost", "127.0.0.1"):
        await route.continue_()
    else:
        await route.abort()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport={"width": 1200, "height": 800}, locale="sv-SE", timezone_id="Europe/Stockholm"
    )
    await context.route("**/*", _local_only)
    opened = await context.new_page()
    opened.set_default_timeout(10_000)
    try:
        yield opened
    finally:
        await context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shot:
    ARTIFACTS.mkdir(exist_ok=True)

    async def save(page: Page, name: str) -> Path:
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    return save


@contextlib.contextmanager
def _provider_for(tmp: Path, port: int) -> Iterator[OidcProvider]:
    with running_oidc_provider(tmp, f"http://localhost:{port}/auth/callback") as provider:
        yield provider


@pytest.fixture
async def web_service(
    db: asyncpg.Connection, dsn: str, broker: PrivateMosquitto, tmp_path: Path
) -> AsyncIterator[RunningService]:
    described = json.loads(json.dumps(REGISTRY))
    described["care_teams"][0]["clinicians"][0]["hsa_id"] = "SE2321000016-1001"
    await registry.apply(db, registry.parse(described))
    port = free_port()
    with _provider_for(tmp_path, port) as provider:
        settings = settings_for(
            dsn,
            broker,
            http_port=port,
            oidc_issuer=provider.issuer,
            oidc_client_id=provider.client_id,
            oidc_client_secret=provider.client_secret,
            oidc_redirect_url=provider.redirect_uri,
            web_poll_seconds=600.0 if HAS_STREAM else 1.0,
        )
        svc = RunningService(settings)
        await svc.start()
        try:
            yield svc
        finally:
            with contextlib.suppress(Exception):
                await svc.stop()
