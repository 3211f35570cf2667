"""The demo page and the API docs in a real browser: headless Chromium (the Debian package,
driven by Playwright) against a real server on the test Redis, two random-weight bundles
with a catalogue. Every request the browser makes outside the server is blocked and
recorded, so the pages are shown to work offline.

The demo test saves a screenshot to var/screenshots/demo.png (git-ignored) for a person to
look at; docs/demo.png is a copy of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.servers import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
KEY = "demo-key"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's Chromium; install "
                    "it with `apt-get install -y chromium` (.ci/run and `make test` do when "
                    "they can)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def server(redis_url: str, catalog_artifacts: Path, tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(redis_url=redis_url, artifacts_dir=catalog_artifacts,
                        data_dir=tmp_path / "var", default_model="hrnn-init",
                        api_keys=[KEY], inference_threads=2)
    with LiveServer(settings) as live:
        yield live


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    """A page that may only reach the server; anything else is aborted and recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    blocked: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.blocked = blocked
    yield page
    context.close()


def _items(page: Any, selector: str) -> list[str]:
    return [str(value) for value in page.eval_on_selector_all(
        f"{selector} button.item", "nodes => nodes.map(n => n.dataset.itemId)")]


def _titles(page: Any, selector: str) -> list[str]:
    return [str(text) for text in page.eval_on_selector_all(
        f"{selector} button.item .title", "nodes => nodes.map(n => n.textContent)")]


def _settle(page: Any) -> None:
    """Wait until the page has finished every action (it runs them one at a time and
    marks <body data-busy> while any is queued or running)."""
    page.wait_for_function("document.body.dataset.busy === 'false'")


TITLE = re.compile(r"^(Jazz album|Trail running shoe|Sci-fi novel|Espresso machine) #\d+$")


def test_demo_page_compares_two_models_and_shows_a_users_memory(page: Any,
                                                                 server: LiveServer) -> None:
    # without the key the page says what is wrong instead of showing empty lists
    page.goto(server.url + "/")
    _settle(page)
    assert "401" in page.inner_text("#error") and "API key" in page.inner_text("#error")

    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    _settle(page)
    assert page.is_hidden("#error")
    assert page.eval_on_selector("#pane-a .model-select", "s => s.value") == "hrnn-init"
    assert page.eval_on_selector("#pane-b .model-select", "s => s.value") == "gru4rec"
    for pane in ("#pane-a", "#pane-b"):
        titles = _titles(page, pane)
        assert len(titles) == 10 and all(TITLE.match(title) for title in titles), titles
        assert re.fullmatch(r"\d+ ms", page.inner_text(f"{pane} .latency"))
    assert all(TITLE.match(title) for title in _titles(page, "#catalog"))

    # a user's start-of-session list next to the anonymous one
    page.click("#users button[data-user='alice']")
    _settle(page)
    assert "has no history of alice yet" in page.inner_text("#memory-summary")
    anonymous = _items(page, "#memory-anon")
    personal = _items(page, "#memory-user")
    assert len(personal) == 10
    assert page.inner_text("#memory-user-source") == "start for a new user"
    assert page.inner_text("#memory-anon-source") == "popular items"

    # clicks from pane A's list, pane B's list and the catalogue; each reaches both models
    session = page.inner_text("#session-id")
    sent: list[dict[str, Any]] = []
    page.on("request", lambda request: sent.append(request.post_data_json)
            if request.method == "POST" and request.url.split("?")[0].endswith("/events")
            else None)
    clicked: list[str] = []
    for source in ("#pane-a .recs", "#pane-b .recs", "#catalog"):
        before_a, before_b = _items(page, "#pane-a .recs"), _items(page, "#pane-b .recs")
        item = _items(page, source)[2]
        page.click(f"{source} button.item[data-item-id='{item}']")
        _settle(page)
        clicked.append(item)
        after_a, after_b = _items(page, "#pane-a .recs"), _items(page, "#pane-b .recs")
        assert after_a != before_a and after_b != before_b
        assert len(after_a) == len(after_b) == 10
        assert not set(clicked) & (set(after_a) | set(after_b))  # seen items are hidden
        assert "click recorded" in page.inner_text("#pane-a .outcome")
        assert "already recorded" in page.inner_text("#pane-b .outcome")
        assert page.inner_text("#pane-a .source") == "from this session"
    trail = page.eval_on_selector_all("#trail li", "nodes => nodes.map(n => n.textContent)")
    assert len(trail) == 3 and all(TITLE.match(title) for title in trail), trail
    # one event per click, sent to both models unchanged; a click in a list names that list
    assert len(sent) == 6 and all(sent[i] == sent[i + 1] for i in (0, 2, 4))
    assert [event["item_id"] for event in sent[::2]] == clicked
    assert all(event["user_id"] == "alice" and event["event_id"] for event in sent)
    assert sent[0]["recommendation_id"] and sent[2]["recommendation_id"]
    assert sent[0]["recommendation_id"] != sent[2]["recommendation_id"]  # pane A's, pane B's
    assert "recommendation_id" not in sent[4]  # the catalogue is not a recommendation
    stored = httpx.get(f"{server.url}/sessions/{session}", headers={"X-API-Key": KEY},
                       timeout=10).json()
    assert [click["item_id"] for click in stored["clicks"]] == clicked  # recorded once each
    assert stored["user_id"] == "alice"

    # ending the session folds it into alice's memory: her start list changes
    page.click("#end-session")
    _settle(page)
    assert page.inner_text("#session-id") != session
    after_end = _items(page, "#memory-user")
    assert after_end != personal and after_end != anonymous
    assert page.locator("#memory-user .badge.fresh").count() >= 1
    assert "alice's start list shares" in page.inner_text("#memory-summary")
    assert "new since it was last shown" in page.inner_text("#memory-summary")
    assert page.inner_text("#memory-user-source") == "from the user's memory"
    history = page.inner_text("#memory-history")
    assert history.startswith("alice's sessions ended on this page: 1) ")
    assert all(title in history for title in trail)
    assert _items(page, "#memory-anon") == anonymous
    # the next session starts from alice's memory in the model that has one
    assert page.inner_text("#pane-a .source") == "from the user's memory"
    assert _items(page, "#pane-a .recs") == after_end
    assert page.inner_text("#pane-b .source") == "popular items"  # GRU4Rec: no user state

    # one click in the new session, then the screenshot a person looks at
    page.click("#pane-a .recs button.item >> nth=0")
    _settle(page)
    assert page.locator("#trail li:not(.empty)").count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "demo.png"), full_page=True)

    # an error clears the stale lists and says what failed
    page.fill("#api-key", "wrong")
    page.click("#pane-b .recs button.item >> nth=0")
    _settle(page)
    for pane in ("#pane-a", "#pane-b"):
        assert "401 unauthorized" in page.inner_text(f"{pane} .pane-error")
        assert _items(page, f"{pane} .recs") == []
        assert page.inner_text(f"{pane} .latency") == ""
    assert "401" in page.inner_text("#error")
    assert page.locator("#trail li:not(.empty)").count() == 1  # the failed click is not shown
    assert page.blocked == []


def test_api_docs_render_offline(page: Any, server: LiveServer) -> None:
    """Swagger UI and ReDoc load their assets from the server itself; every other request
    is refused, and none is attempted."""
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.eval_on_selector_all(".opblock-summary-path",
                                      "nodes => nodes.map(n => n.textContent)")
    assert any("/sessions/{session_id}/events" in path for path in paths), paths
    assert any("/catalog" in path for path in paths)
    assert "nextclick" in page.inner_text(".information-container")

    page.goto(server.url + "/redoc")
    page.wait_for_selector("h2", state="attached")
    page.wait_for_function("document.body.innerText.includes('/sessions/{session_id}/events')")
    assert page.blocked == []
