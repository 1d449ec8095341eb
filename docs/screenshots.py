"""The dashboard's screenshots in docs/ (``nox -s screenshots``), taken
from a real deployment running the demo's workload.

It starts ``pmq dashboard --demo`` (embedded servers unless PMQ_* URLs are
set), waits for the demo's jobs to finish, pauses one queue from the page
and enqueues more of its jobs (so the overview shows a backlog), then
saves the overview and the page of a job that was retried before it
succeeded, as headless Chromium shows them. The paused queue is resumed
before it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from pmq_core import Admin, Client, JobStatus, Settings

DOCS = Path(__file__).parent
BACKLOG_QUEUE = "demo:report"
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dashboard(port: int) -> subprocess.Popen[str]:
    """``pmq dashboard --demo``, once the demo's own jobs are done."""
    process = subprocess.Popen([sys.executable, "-m", "pmq_core.cli", "dashboard", "--demo", "--port", str(port)],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PMQ_DASHBOARD_REFRESH": "1"})
    assert process.stderr is not None
    deadline = time.monotonic() + 180
    for line in process.stderr:
        sys.stderr.write(line)
        if "go on serving" in line:
            threading.Thread(target=shutil.copyfileobj, args=(process.stderr, sys.stderr), daemon=True).start()
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit("the demo did not finish its jobs beside the dashboard")


def retried_job(admin: Admin) -> str:
    """A demo job that failed transiently twice, then succeeded."""
    page = admin.job_page(queue="demo:flaky", statuses=[JobStatus.COMPLETED], limit=100)
    for job in page.jobs:
        if len(admin.job(job.id)[1]) == 3:
            return str(job.id)
    raise SystemExit("no demo:flaky job with three attempts")


def main() -> None:
    chromium = os.environ.get("PMQ_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no Chromium found: install Debian's chromium package (or set PMQ_CHROMIUM)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dashboard = start_dashboard(port)
    settings = Settings.load()
    try:
        with Admin(settings) as admin, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport=VIEWPORT)
            expect.set_options(timeout=30_000)
            page.goto(f"{url}/queues/{BACKLOG_QUEUE}")
            page.get_by_role("button", name="Pause queue").click()
            expect(page.locator(".notice")).to_contain_text("Queue paused")
            with Client(settings) as client:
                client.enqueue_many(BACKLOG_QUEUE, [{"account_id": n, "period": "this-month"} for n in range(240)])
                client.enqueue_many("demo:thumbnail", [{"image_id": n, "width": 640} for n in range(12)], delay=3600)
            page.goto(url)
            expect(page.locator(f'tr[data-queue="{BACKLOG_QUEUE}"] td.waiting')).to_have_text("240")
            expect(page.locator("#throughput[data-loaded='60']")).to_be_attached()
            page.screenshot(path=DOCS / "dashboard-overview.png", full_page=True)

            page.goto(f"{url}/jobs/{retried_job(admin)}")
            expect(page.locator("#job-status")).to_have_text("completed")
            page.screenshot(path=DOCS / "dashboard-job.png", full_page=True)
            browser.close()
    finally:
        with Admin(settings) as admin:
            admin.set_active(BACKLOG_QUEUE, True)
        dashboard.send_signal(signal.SIGINT)
        try:
            dashboard.wait(timeout=60)
        except subprocess.TimeoutExpired:
            dashboard.kill()
    print(f"saved {DOCS / 'dashboard-overview.png'} and {DOCS / 'dashboard-job.png'}")


if __name__ == "__main__":
    main()
