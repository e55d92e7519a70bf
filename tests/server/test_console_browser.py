"""The console in a real browser: Debian's headless Chromium, driven by Playwright for Python,
against a real `logserver serve` on a real socket.

Marked `browser`: `make test-browser` runs them (it installs Chromium); plain `make test` leaves
them out, and they skip, saying why, when Chromium or Playwright is missing. Each page's
screenshot is saved in tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import base64
import json
import math
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from logserver.auth import Permissions, UserRecord, format_user_line, hash_password

from .conftest import PASSWORD, USER, ServerProcess

if TYPE_CHECKING:  # at run time Playwright is imported where the fixture checks it is there
    from playwright.sync_api import Browser, ConsoleMessage, Page

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("LOGSERVER_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
VIEWER = "viewer"  # may read and write the streams team-* only
WAIT_MS = 10_000


# ---- the server and the browser -------------------------------------------------------------------


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    """A server sampling twice a second, dead-lettering an event on its second delivery."""
    data = tmp_path / "data"
    data.mkdir()
    password_hash = hash_password(PASSWORD)
    viewer = UserRecord(password_hash, Permissions(produce=("team-*",), consume=("team-*",)))
    (data / "users").write_text(
        f"{USER}:{password_hash}\n" + format_user_line(VIEWER, viewer) + "\n", encoding="utf-8"
    )
    extra = ["--samples-interval", "0.5", "--max-deliveries", "1"]
    return server_factory(data, extra_args=extra).start()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test-browser` installs Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is missing: pip install -e '.[test]' (make test-browser does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[str], Page]]:
    """A new browser context signed in as the given user (Basic credentials, as a person types them)."""
    contexts = []

    def open_as(user: str) -> Page:
        context = browser.new_context(
            http_credentials={"username": user, "password": PASSWORD},
            viewport={"width": 1280, "height": 900},
            timezone_id="UTC",  # what a datetime-local field means
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(script_error(message)))
        page.errors = errors  # type: ignore[attr-defined]  # read by the tests at the end
        return page

    yield open_as
    for context in contexts:
        context.close()


def script_error(message: ConsoleMessage) -> str:
    """What the browser logged as an error, "" for anything else.

    The one expected error: a stream's samples are 404 until the ring has sampled it (up to
    --samples-interval after its creation), and the page then says "Collecting samples…".
    """
    url = message.location.get("url", "")
    if message.type != "error" or (url.endswith("/samples") and "404" in message.text):
        return ""
    return f"{message.text} ({url})"


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def assert_no_script_errors(page: Page) -> None:
    errors = [error for error in page.errors if error]  # type: ignore[attr-defined]
    assert not errors, errors


# ---- the API, as the test's own client ----------------------------------------------------------


def call(server: ServerProcess, method: str, path: str, body: Any = None, **headers: str) -> Any:
    credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(
        server.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Basic {credentials}", "Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stream_path(stream: str) -> str:
    return f"/api/v1/streams/{quote(stream, safe='')}"


def append(server: ServerProcess, stream: str, name: str = "OrderPlaced", **payload: Any) -> str:
    body = {"event": {"name": name, "version": 1}, "payload": payload}
    event_id: str = call(server, "POST", f"{stream_path(stream)}/events", body, **{"X-Producer-ID": "shop"})
    return event_id


def consume(server: ServerProcess, stream: str, consumer: str, query: str = "") -> list[dict[str, Any]]:
    path = f"{stream_path(stream)}/events?eventName=OrderPlaced&limit=50{query}"
    events: list[dict[str, Any]] = call(server, "GET", path, **{"X-Consumer-ID": consumer})
    return events


def position(server: ServerProcess, stream: str, consumer: str) -> int:
    rows = call(server, "GET", f"{stream_path(stream)}/consumers")
    (row,) = [r for r in rows if r["consumer"] == consumer]
    found: int = row["position"]
    return found


def dead_letter_one(server: ServerProcess, stream: str) -> None:
    """Lease an event and let the lease lapse: its second delivery moves it to `stream`.dlq."""
    append(server, stream, jobId=7)
    assert consume(server, stream, "workers", "&ackWait=0.2")
    time.sleep(0.3)
    assert consume(server, stream, "workers", "&ackWait=0.2") == []


# ---- the pages ---------------------------------------------------------------------------------


def test_the_streams_page_lists_a_stream_the_test_created_and_marks_dead_letters(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    from playwright.sync_api import expect

    for i in range(3):
        append(server, "orders", orderId=i)
    dead_letter_one(server, "jobs")
    page = open_page(USER)
    page.goto(f"{server.url}/console/")

    row = page.locator('tr[data-stream="orders"]')
    expect(row.locator("td").nth(1)).to_have_text("shop")
    expect(row.locator("td").nth(2)).to_have_text("3")
    expect(row.locator("td").nth(5)).to_have_text("3")  # last sequence
    expect(page.locator('tr[data-stream="jobs.dlq"] .badge.dlq')).to_have_text("dead letters")
    expect(page.locator('tr[data-stream="orders"] .badge.dlq')).to_have_count(0)
    for i in range(12):  # a rate to draw: about 4 events a second for 3 seconds
        append(server, "orders", orderId=100 + i)
        time.sleep(0.25)
    expect(page.locator("#rate-chart canvas")).to_be_visible()
    expect(row.locator("td").nth(2)).to_have_text("15")
    expect(page.locator("#rate-chart .u-legend")).to_contain_text("orders")
    screenshot(page, "streams")
    assert_no_script_errors(page)


def test_an_event_appended_after_the_page_loaded_appears_in_the_live_tail(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    from playwright.sync_api import expect

    append(server, "orders", orderId=1)
    append(server, "orders", orderId=2)
    page = open_page(USER)
    page.goto(f"{server.url}/console/#/stream/orders")
    expect(page.locator("#facts")).to_contain_text("events 2")
    page.click("#tail-toggle")
    expect(page.locator("#tail-info")).to_contain_text("following from sequence 3")

    append(server, "orders", "OrderPaid", marker="appended after the page loaded")
    row = page.locator('#tail tr[data-sequence="3"]')
    expect(row).to_contain_text("OrderPaid")
    expect(page.locator("#tail tr[data-sequence]")).to_have_count(1)  # not the events from before
    row.click()
    expect(page.locator("#tail pre.json")).to_contain_text('"marker": "appended after the page loaded"')
    screenshot(page, "stream")
    assert_no_script_errors(page)


def test_a_consumer_reset_through_the_page_moves_the_consumer(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    from playwright.sync_api import expect

    ids = [append(server, "orders", orderId=i) for i in range(4)]
    events = consume(server, "orders", "mailer")
    for event in events:
        ack = f"{stream_path('orders')}/events/{event['eventId']}"
        assert call(server, "POST", ack, {"action": "ACK"}, **{"X-Consumer-ID": "mailer"}) == "OK"
    assert [e["eventId"] for e in events] == ids and position(server, "orders", "mailer") == 4

    page = open_page(USER)
    page.goto(f"{server.url}/console/#/stream/orders")
    row = page.locator('#consumers tr[data-consumer="mailer"]')
    expect(row.locator("td").nth(2)).to_have_text("4")  # position
    expect(row.locator("td").nth(4)).to_have_text("0")  # behind
    row.get_by_role("button", name="Reset…").click()
    expect(page.locator("#reset-consumer")).to_have_value("mailer")
    page.select_option("#reset-to", "sequence")
    page.fill("#reset-sequence", "2")

    page.click("#reset-button")  # first cancelled: nothing moves
    expect(page.locator("#confirm")).to_be_visible()
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert position(server, "orders", "mailer") == 4

    page.click("#reset-button")
    expect(page.locator("#confirm-text")).to_contain_text("sequence 2")
    screenshot(page, "reset-confirmation")
    page.click("#confirm-ok")
    expect(page.locator("#reset-message")).to_have_text("Consumer “mailer” is now at position 1.")
    assert position(server, "orders", "mailer") == 1
    assert [e["sequence"] for e in consume(server, "orders", "mailer")] == [2, 3, 4]
    expect(row.locator("td").nth(4)).to_have_text("3")  # the page refreshed: 3 behind now
    expect(page.locator("#lag-chart .u-legend")).to_contain_text("mailer · OrderPlaced")
    time.sleep(1.5)  # three more samples: the chart's step from 0 to 3 behind
    screenshot(page, "stream-after-reset")
    assert_no_script_errors(page)


def test_a_restricted_user_sees_only_its_streams(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    from playwright.sync_api import expect

    append(server, "orders")
    append(server, "team-a")
    append(server, "team-b")
    page = open_page(VIEWER)
    page.goto(f"{server.url}/console/")
    expect(page.locator("#streams tbody tr")).to_have_count(2)
    names = page.locator("#streams tbody tr").evaluate_all("rows => rows.map(r => r.dataset.stream)")
    assert names == ["team-a", "team-b"]
    screenshot(page, "streams-restricted")

    page.goto(f"{server.url}/console/#/stream/orders")  # typed by hand: the server refuses
    refusal = "Forbidden - user 'viewer' may not consume from stream 'orders'"
    expect(page.locator("#status")).to_have_text(refusal)


def test_the_event_browser_pages_newest_first_filtered_by_name_and_shows_json(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    from playwright.sync_api import expect

    for i in range(1, 31):
        append(server, "orders", "OrderPaid" if i % 2 == 0 else "OrderPlaced", n=i)
    page = open_page(USER)
    page.goto(f"{server.url}/console/#/stream/orders")
    info = page.locator("#browse-info")

    def shown() -> list[int]:
        cells = page.locator("#events tbody tr[data-sequence]")
        return [int(s) for s in cells.evaluate_all("rows => rows.map(r => r.dataset.sequence)")]

    expect(info).to_have_text("Sequences 6 to 30, newest first.")  # shown on opening the page
    assert shown() == list(range(30, 5, -1))
    page.select_option("#browse-event-name", "OrderPaid")
    page.select_option("#browse-limit", "10")
    page.click("#browse-show")
    expect(info).to_have_text("Sequences 12 to 30, newest first.")
    assert shown() == list(range(30, 10, -2))
    page.click("#browse-more")
    expect(info).to_have_text("Sequences 2 to 10, newest first.")
    assert shown() == [10, 8, 6, 4, 2]
    expect(page.locator("#browse-more")).to_be_disabled()

    page.select_option("#browse-order", "oldest")
    page.select_option("#browse-event-name", "")
    page.fill("#browse-sequence", "5")
    page.click("#browse-show")
    expect(info).to_have_text("Sequences 5 to 14, oldest first.")
    assert shown() == list(range(5, 15))
    page.locator('#events tr[data-sequence="7"]').click()
    expect(page.locator("#events pre.json")).to_contain_text('"n": 7')
    screenshot(page, "events")
    assert_no_script_errors(page)


def test_setting_retention_through_the_page_reaches_the_stream(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    from playwright.sync_api import expect

    append(server, "orders")
    page = open_page(USER)
    page.goto(f"{server.url}/console/#/stream/orders")
    expect(page.locator("#facts")).to_contain_text("retention server default")
    page.fill("#retention-bytes", "1048576")
    page.click("#retention-button")
    expect(page.locator("#confirm-text")).to_contain_text("below 1048576 bytes")
    page.click("#confirm-ok")
    expect(page.locator("#retention-message")).to_contain_text("Retention set")
    assert call(server, "GET", stream_path("orders"))["retention"] == {"maxBytes": 1048576}
    expect(page.locator("#facts")).to_contain_text("retention 1.0 MiB")
    assert_no_script_errors(page)


def test_the_event_browser_starts_at_a_time(server: ServerProcess, open_page: Callable[[str], Page]) -> None:
    from playwright.sync_api import expect

    for i in range(3):
        append(server, "orders", n=i)
    boundary = math.ceil(time.time())  # a whole second after the first three events
    time.sleep(boundary - time.time() + 0.05)
    for i in range(3, 6):
        append(server, "orders", n=i)
    page = open_page(USER)
    page.goto(f"{server.url}/console/#/stream/orders")
    expect(page.locator("#browse-info")).to_have_text("Sequences 1 to 6, newest first.")
    page.select_option("#browse-mode", "time")
    page.fill("#browse-time", datetime.fromtimestamp(boundary, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    page.select_option("#browse-order", "oldest")
    page.click("#browse-show")
    expect(page.locator("#browse-info")).to_have_text("Sequences 4 to 6, oldest first.")
    page.select_option("#browse-order", "newest")
    page.click("#browse-show")  # newest first up to that time: the events before it
    expect(page.locator("#browse-info")).to_have_text("Sequences 1 to 3, newest first.")
    assert_no_script_errors(page)


def test_the_api_reference_renders_the_servers_own_document(
    server: ServerProcess, open_page: Callable[[str], Page]
) -> None:
    page = open_page("admin")
    page.goto(f"{server.url}/api/v1/docs")
    # Redoc draws the document's title and each operation's summary from /api/v1/openapi.json.
    page.get_by_text("Append an event", exact=False).first.wait_for()
    assert "logserver" in page.inner_text("body")
    assert page.locator("h2", has_text="Append").count() > 0
    screenshot(page, "api-reference")
    # Redoc's own footer logo lives on its CDN: the page's policy refuses to fetch it (nothing
    # leaves the server), and the browser looks for a favicon. Nothing else may go wrong.
    errors = [
        error
        for error in page.errors  # type: ignore[attr-defined]
        if error and "cdn.redoc.ly" not in error and "favicon.ico" not in error
    ]
    assert not errors, errors
