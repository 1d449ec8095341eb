"""Fixtures of the dashboard tests: the dashboard served by uvicorn on a
loopback port for a test's own deployment, and the system's Chromium
driven by Playwright (which never downloads a browser of its own here)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from pmq_dashboard import create_app

from pmq_core.testing import Runtime, wait_until

#: Where to look for Chromium, first found wins; PMQ_CHROMIUM names another.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


class Served:
    """A dashboard served in a thread; ``url`` is its base URL."""

    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="pmq-dashboard-test", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, bool, 10, "the dashboard did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(runtime, token=..., read_only=...)``: the dashboard of that
    runtime's deployment (its plugins describe the queues), live parts
    refreshed every half second."""
    started: list[Served] = []

    def start(runtime: Runtime, **options: Any) -> Served:
        options.setdefault("refresh", 0.5)
        served = Served(create_app(runtime.admin, **options))
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def chromium_path() -> str | None:
    named = os.environ.get("PMQ_CHROMIUM")
    if named:
        return named
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, one per test module (each test opens its own
    page). Not one per session: Playwright's sync API keeps an event loop
    running in this thread while it is open, and later tests call
    ``asyncio.run`` there."""
    path = chromium_path()
    if path is None:
        pytest.skip(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH, and PMQ_CHROMIUM): "
                    "install Debian's chromium package, as .ci/run does")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                   "(pip install -e 'plugins/pmq-dashboard[test]')")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, serve: Any) -> Iterator[Any]:
    """A fresh browser context and page (closed before the dashboards the
    test served stop); fails the test on any page error
    or Content-Security-Policy violation (they would hide a broken page)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    assert not problems, problems
