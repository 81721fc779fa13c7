"""The browser test harness: Debian's Chromium driven by Playwright, no browser download.

``page`` is a fresh browser page (Chromium at /usr/bin/chromium, headless, with the
flags this machine needs); it may talk to localhost only: any other request is aborted (a
closed network, as a hospital's may be: the app must need nothing from outside).
``shot(page, name)`` saves a screenshot to tests/browser/artifacts/ (gitignored; the best
are copied to docs/screenshots/ for the README).
``new_page()`` opens another such page in a context of its own (a second person's browser).
``web_service`` runs the whole service (worker, API, web app) with single sign-on through
the test OpenID provider, registry applied, cl-a1 known by anna's HSA id and rv-1 (Granskare
R, role ``reviewer``, in vc-a) by rita's.
``breach(broker)`` publishes a reading over p-1's urgent bound (systolic 190) from gw-1;
``alert_of(db)`` waits for the alert it raises.
``HeldRows`` holds a page's first Inbox refresh (its rows read, not yet shown) until told.
``basic_a11y(page)`` is an axe-like check of the page's DOM (see its docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)

from homemonitor import registry
from homemonitor.contract.protocol import readings_topic
from homemonitor.embedded import PrivateMosquitto, free_port
from tests.conftest import (
    REGISTRY,
    OidcProvider,
    RunningService,
    bp,
    publisher,
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


NewPage = Callable[[], Awaitable[Page]]


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[NewPage]:
    contexts: list[BrowserContext] = []

    async def open_page() -> Page:
        context = await browser.new_context(
            viewport={"width": 1200, "height": 800},
            locale="sv-SE",
            timezone_id="Europe/Stockholm",
            accept_downloads=True,
        )
        contexts.append(context)
        await context.route("**/*", _local_only)
        opened = await context.new_page()
        opened.set_default_timeout(10_000)
        return opened

    try:
        yield open_page
    finally:
        for context in contexts:
            await context.close()


@pytest.fixture
async def page(new_page: NewPage) -> Page:
    return await new_page()


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
    described["care_teams"][0]["clinicians"].append(
        {"id": "rv-1", "name": "Granskare R", "role": "reviewer", "hsa_id": "SE2321000016-2001"}
    )
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


async def sign_in(page: Page, service: RunningService, login: str) -> None:
    """Through the provider's own pages, as a person would; ends on the Inbox."""
    await page.goto(service.url.replace("127.0.0.1", "localhost") + "/")
    await expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    await page.get_by_role("link", name="Logga in med e-tjänstekort (SITHS)").click()
    await page.locator('input[name="login"]').fill(login)
    await page.locator('input[name="password"]').fill("any")
    await page.get_by_role("button", name="Sign-in").click()
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Inkorg", level=1)).to_be_visible()


#: The DOM half of an axe-like check; returns the problems found, each naming its element.
_A11Y_JS = """() => {
  const problems = [];
  const name = (el) => el.outerHTML.slice(0, 120);
  const text = (ids) => ids.split(/\\s+/).map((id) => document.getElementById(id))
    .map((el) => (el ? el.textContent.trim() : "")).join(" ").trim();
  if (!document.documentElement.lang) problems.push("<html> has no lang");
  if (!document.title.trim()) problems.push("the page has no <title>");
  const seen = new Map();
  for (const el of document.querySelectorAll("[id]")) {
    if (seen.has(el.id)) problems.push(`duplicate id ${el.id}: ${name(el)}`);
    seen.set(el.id, el);
  }
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (["hidden", "submit", "button", "reset"].includes(el.type)) continue;
    const labelled = [...el.labels].some((l) => l.textContent.trim())
      || (el.getAttribute("aria-label") || "").trim()
      || text(el.getAttribute("aria-labelledby") || "");
    if (!labelled) problems.push(`no label: ${name(el)}`);
  }
  for (const el of document.querySelectorAll("img")) {
    if (!el.hasAttribute("alt") && !el.getAttribute("aria-label")) {
      problems.push(`no alt: ${name(el)}`);
    }
  }
  for (const el of document.querySelectorAll('svg[role="img"], [role="img"]')) {
    const label = (el.getAttribute("aria-label") || "").trim()
      || text(el.getAttribute("aria-labelledby") || "");
    if (!label) problems.push(`image without a name: ${name(el)}`);
  }
  for (const el of document.querySelectorAll("svg:not([role]):not([aria-hidden='true'])")) {
    if (!el.closest("[aria-hidden='true']")) {
      problems.push(`svg neither image nor hidden: ${name(el)}`);
    }
  }
  for (const el of document.querySelectorAll("a[href], button, summary")) {
    const named = el.textContent.trim() || (el.getAttribute("aria-label") || "").trim()
      || text(el.getAttribute("aria-labelledby") || "");
    if (!named) problems.push(`control without a name: ${name(el)}`);
  }
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one <h1>");
  if (!document.querySelector("main")) problems.push("no <main> landmark");
  return problems;
}"""


async def basic_a11y(page: Page) -> None:
    """An axe-like basic check, no external service: ``lang`` and a title set, one h1 and a
    main landmark, ids unique (a label's ``for`` finds its field), every field labelled,
    every image (``<img>``, ``role=img``) named, every link and button named; and the
    accessibility tree Chromium builds has the page's heading as a heading."""
    problems = await page.evaluate(_A11Y_JS)
    assert [] == problems, f"{page.url}: {problems}"
    heading = await page.locator("h1").inner_text()
    tree = await page.locator("main").aria_snapshot()
    assert f'heading "{heading}" [level=1]' in tree.replace("'", '"'), tree


async def breach(broker: PrivateMosquitto) -> None:
    """p-1's cuff sends systolic 190, over the plan's urgent 180, through gw-1."""
    async with publisher(broker) as gw:
        await gw.publish(readings_topic("gw-1"), bp("cuff-1", 190, 100, datetime.now(UTC)), qos=1)


async def alert_of(db: asyncpg.Connection) -> int:
    """The id of p-1's active alert once the worker has raised it (within 15 s)."""
    for _ in range(150):
        found = await db.fetchval(
            "SELECT id FROM alerts WHERE patient_id = 'p-1' AND status = 'open' ORDER BY id LIMIT 1"
        )
        if found is not None:
            return int(found)
        await asyncio.sleep(0.1)
    raise AssertionError("no alert raised for p-1")


class HeldRows:
    """A page's first ``/inbox/rows`` answer, read from the server at once and handed to
    the page only on :meth:`release`: a refresh caught between its fetch and its drawing."""

    def __init__(self) -> None:
        self._held: asyncio.Queue[Route] = asyncio.Queue()
        self._release = asyncio.Event()

    async def install(self, page: Page) -> None:
        await page.route(re.compile(r"/inbox/rows"), self._route)

    async def _route(self, route: Route) -> None:
        if self._held.qsize() or self._release.is_set():
            await route.continue_()
            return
        response = await route.fetch()  # the rows as they are now
        await self._held.put(route)
        await self._release.wait()
        await route.fulfill(response=response)

    async def wait_held(self) -> None:
        """Until the page has asked for its rows (at most 15 s)."""
        async with asyncio.timeout(15):
            await self._held.get()

    def release(self) -> None:
        self._release.set()
