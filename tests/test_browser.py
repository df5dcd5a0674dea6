"""End-to-end test of the FastAPI example page in a real, headless Chromium.

Drives Debian's Chromium (/usr/bin/chromium, or $WSHUB_CHROMIUM) with
Playwright for Python (tests/chromium.py); the Playwright browser downloads
are never used.
The app runs in a thread on 127.0.0.1 port 0 with its hub on port 0 and the
simulated scraper off, so every update the page shows comes from the test.

Skipped when the playwright package or the Chromium binary is missing.
Screenshots go to the test's tmp_path and are copied to tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed (requirements-examples.txt)")
pytest.importorskip("uvicorn", reason="uvicorn not installed (requirements-examples.txt)")
httpx = pytest.importorskip("httpx", reason="httpx not installed (requirements-examples.txt)")
from chromium import launch, require_chromium  # noqa: E402

sync_api = require_chromium()
expect = sync_api.expect

from helpers import load_example  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
TIMEOUT_MS = 15_000

ODDS_MATCH = "Test FC v Example United"

# Generous: CI machines can be busy. Conditions are polled, so a passing
# run does not wait for these.
expect.set_options(timeout=TIMEOUT_MS)


example = load_example()


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_app() -> Iterator[Callable[..., tuple[Any, str, Any]]]:
    """Factory: ``live_app(**settings)`` -> (app, base_url, http_client),
    stopped at teardown (the lifespan stops the hub)."""
    with contextlib.ExitStack() as stack:
        def factory(**overrides: Any) -> tuple[Any, str, Any]:
            settings = dict(ws_port=0, ws_host="127.0.0.1", simulate=False,
                            enable_admin=True, public_ws_url="",
                            reconnect_initial_ms=100, reconnect_max_ms=1000)
            settings.update(overrides)
            app = example.create_app(**settings)
            base = stack.enter_context(example.serve_in_thread(app))
            client = stack.enter_context(
                httpx.Client(base_url=base, trust_env=False, timeout=10))
            return app, base, client
        yield factory


@pytest.fixture
def page(browser, request, tmp_path) -> Iterator[Any]:
    """A fresh page; a screenshot is saved at teardown (pass or fail) to
    tmp_path and tests/artifacts/<test name>.png. JavaScript errors on the
    page fail the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        try:
            shot = tmp_path / f"{request.node.name}.png"
            page.screenshot(path=str(shot), full_page=True)
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(shot, ARTIFACTS / shot.name)
        finally:
            context.close()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def publish(client: Any, topic: str, data: Any) -> int:
    response = client.post("/publish", json={"topic": topic, "data": data})
    assert response.status_code == 200, response.text
    return response.json()["delivered"]


def odds(home: float, draw: float = 3.4, away: float = 4.2) -> dict[str, Any]:
    return {"match": ODDS_MATCH, "market": "1X2",
            "prices": {"home": home, "draw": draw, "away": away},
            "timestamp": 1700000000.0}


def progress(job: str, done: int, total: int = 20,
             status: str = "running") -> dict[str, Any]:
    return {"job_id": job, "pages_done": done, "pages_total": total,
            "status": status}


def expect_connected(page: Any, topics: str) -> None:
    """Connected, and the hub's subscription set (from its acks) is
    ``topics`` (comma-separated, sorted)."""
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#subscriptions")).to_have_attribute("data-topics", topics)


def expect_progress(page: Any, job: str, done: int) -> None:
    box = page.locator("#progress")
    expect(box).to_have_attribute("data-job", job)
    expect(box).to_have_attribute("data-done", str(done))


def home_price(page: Any) -> Any:
    return page.locator(
        f'tr[data-match="{ODDS_MATCH}"] [data-outcome="home"] .value')


def restart_hub(page: Any, client: Any, port: int) -> None:
    """Stop the hub, see the page notice, start it again on the same port."""
    assert client.post("/admin/hub/stop").json() == {"running": False, "port": port}
    page.wait_for_function(
        "() => document.querySelector('#status').dataset.state !== 'connected'")
    expect(page.locator("#subscriptions")).to_have_attribute("data-topics", "")
    assert client.post("/admin/hub/start").json() == {"running": True, "port": port}


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_live_updates_topic_toggle_and_reconnect(live_app, page):
    app, base, client = live_app()
    port = app.state.ws_manager.port
    page.goto(base + "/")
    expect_connected(page, "odds_updates,scrape_progress")
    expect(page.locator("#ws-url")).to_have_text(f"ws://127.0.0.1:{port}/api/ws")

    # Odds published through POST /publish show up in the table.
    assert publish(client, "odds_updates", odds(1.85)) == 1
    row = page.locator(f'tr[data-match="{ODDS_MATCH}"]')
    expect(row).to_have_count(1)
    expect(home_price(page)).to_have_text("1.85")
    expect(row).to_have_attribute("data-market", "1X2")
    expect(row.locator('[data-outcome="away"] .value')).to_have_text("4.20")

    # Progress published straight through the hub object moves the bar.
    assert app.state.ws_manager.broadcast("scrape_progress", progress("job-A", 5)) == 1
    expect_progress(page, "job-A", 5)
    expect(page.locator("#progress-bar")).to_have_attribute("aria-valuenow", "25")
    expect(page.locator("#progress-text")).to_contain_text("job-A: 5/20")

    # Toggle odds_updates off: once the hub's "unsubscribed" ack is on the
    # page, odds are no longer sent to it at all...
    page.uncheck("#topic-odds_updates")
    expect_connected(page, "scrape_progress")
    odds_count = page.locator("#count-odds_updates").get_attribute("data-count")
    prices_before = row.get_attribute("data-prices")
    assert publish(client, "odds_updates", odds(2.50)) == 0
    # ...while the control publication on the other topic, published after
    # it, does arrive: had the odds been delivered, they would be there too.
    assert publish(client, "scrape_progress", progress("job-B", 7)) == 1
    expect_progress(page, "job-B", 7)
    expect(home_price(page)).to_have_text("1.85")
    assert row.get_attribute("data-prices") == prices_before
    expect(page.locator("#count-odds_updates")).to_have_attribute("data-count", odds_count)
    expect(page.locator("#ignored")).to_have_attribute("data-count", "0")

    # Toggle it back on: odds flow again.
    page.check("#topic-odds_updates")
    expect_connected(page, "odds_updates,scrape_progress")
    assert publish(client, "odds_updates", odds(2.75)) == 1
    expect(home_price(page)).to_have_text("2.75")

    # Leave odds off, bounce the hub on the same port: the page reconnects
    # and subscribes again to the enabled topic only.
    page.uncheck("#topic-odds_updates")
    expect_connected(page, "scrape_progress")
    restart_hub(page, client, port)
    expect_connected(page, "scrape_progress")
    expect(page.locator("#reconnects")).to_have_attribute("data-count", "1")
    # A new hub, a new epoch: wshub.js says the page may be stale.
    recovery = page.locator("#recovery")
    expect(recovery).to_have_attribute("data-topic", "scrape_progress")
    expect(recovery).to_have_attribute("data-recovered", "false")
    assert app.state.ws_manager.port == port
    assert publish(client, "scrape_progress", progress("job-C", 20, status="done")) == 1
    expect_progress(page, "job-C", 20)
    expect(page.locator("#progress")).to_have_attribute("data-status", "done")
    expect(page.locator("#progress-bar")).to_have_attribute("aria-valuenow", "100")
    assert publish(client, "odds_updates", odds(9.99)) == 0
    expect(home_price(page)).to_have_text("2.75")

    # And the re-enabled topic works on the new hub.
    page.check("#topic-odds_updates")
    expect_connected(page, "odds_updates,scrape_progress")
    assert publish(client, "odds_updates", odds(3.10)) == 1
    expect(home_price(page)).to_have_text("3.10")
    expect(page.locator("#missed")).to_have_attribute("data-count", "0")
    expect(page.locator("#ignored")).to_have_attribute("data-count", "0")


def test_all_topics_off_survives_reconnect(live_app, page):
    # With an allow-list, a handshake asking for no allowed topic gets all
    # of them; the page must unsubscribe again after reconnecting.
    app, base, client = live_app()
    port = app.state.ws_manager.port
    page.goto(base + "/")
    expect_connected(page, "odds_updates,scrape_progress")
    page.uncheck("#topic-odds_updates")
    page.uncheck("#topic-scrape_progress")
    expect_connected(page, "")

    restart_hub(page, client, port)
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#reconnects")).to_have_attribute("data-count", "1")
    expect(page.locator("#subscriptions")).to_have_attribute("data-topics", "")
    assert publish(client, "odds_updates", odds(1.50)) == 0
    assert publish(client, "scrape_progress", progress("job-X", 1)) == 0

    page.check("#topic-scrape_progress")
    expect_connected(page, "scrape_progress")
    assert publish(client, "scrape_progress", progress("job-Y", 3)) == 1
    expect_progress(page, "job-Y", 3)
    expect(page.locator(f'tr[data-match="{ODDS_MATCH}"]')).to_have_count(0)


def test_simulated_scraper_fills_the_page(live_app, page):
    app, base, client = live_app(simulate=True, simulate_interval=0.05,
                                 enable_admin=False)
    page.goto(base + "/")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    # Rows for the simulated matches appear and the bar starts moving.
    expect(page.locator("#odds-table tbody tr").first).to_be_visible()
    page.wait_for_function(
        "() => document.querySelectorAll('#odds-table tbody tr').length >= 2")
    page.wait_for_function(
        "() => Number(document.querySelector('#progress').dataset.done) > 0")
    expect(page.locator("#odds-empty")).to_be_hidden()
    first = page.locator("#odds-table tbody tr").first
    assert first.get_attribute("data-match")
    assert first.locator(".price").count() >= 2
