"""The dashboard's defences, each tried against the running server: where
it may listen, the token, CSRF on every action, GET changing nothing,
read-only mode, escaping and the security headers."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from pmq_core import JobStatus, JobType, hookimpl

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e 'plugins/pmq-dashboard[test]')")

TOKEN = "correct-horse-battery-staple"


class Mail:
    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="mail", handler=lambda job: None)]


@pytest.fixture
def deployment(pmq_runtime: Any) -> Any:
    """A deployment with no worker: jobs stay where the test puts them."""
    return pmq_runtime(Mail(), worker=False, migrator=False)


def client(url: str, **options: Any) -> Any:
    return httpx.Client(base_url=url, follow_redirects=False, timeout=10, **options)


def csrf_of(http: Any) -> str:
    """Open a page, as a browser does first, and return the CSRF token it set."""
    http.get("/login")
    return http.cookies["pmq_csrf"]


def queue_active(rt: Any) -> bool:
    with rt.admin() as admin:
        return next(q["is_active"] for q in admin.queues() if q["name"] == "mail")


def run_pmq(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_DASHBOARD_")}
    return subprocess.run([sys.executable, "-m", "pmq_core.cli", *args], env={**environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    result = run_pmq("dashboard", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "PMQ_DASHBOARD_TOKEN" in result.stderr
    short = run_pmq("dashboard", "--host", "0.0.0.0", "--port", "1", PMQ_DASHBOARD_TOKEN="abc")
    assert short.returncode == 1 and "at least 16 characters" in short.stderr
    assert "abc" not in short.stderr  # a secret is never echoed


def test_a_token_guards_every_page_and_the_login_sets_a_session(deployment: Any, serve: Any) -> None:
    url = serve(deployment, token=TOKEN).url
    with client(url) as anonymous:
        assert anonymous.get("/").status_code == 303
        assert anonymous.get("/").headers["location"] == "/login"
        assert anonymous.get("/api/throughput").status_code == 303
        assert anonymous.get("/queues/mail", headers={"HX-Request": "true"}).status_code == 401
        assert anonymous.get("/", headers={"Authorization": "Bearer wrong-token-of-some-length"}).status_code == 303
        assert anonymous.get("/static/dashboard.js").status_code == 200  # the login page needs it
    with client(url, headers={"Authorization": f"Bearer {TOKEN}"}) as script:
        assert script.get("/api/throughput").status_code == 200
    with client(url) as browser:
        csrf = csrf_of(browser)
        refused = browser.post("/login", data={"token": "not-the-token-at-all", "csrf": csrf})
        assert refused.status_code == 401 and "pmq_dashboard_session" not in browser.cookies
        logged_in = browser.post("/login", data={"token": TOKEN, "csrf": csrf})
        assert logged_in.status_code == 303
        session = browser.cookies["pmq_dashboard_session"]
        assert TOKEN not in session
        assert "HttpOnly" in logged_in.headers["set-cookie"] and "SameSite=strict" in logged_in.headers["set-cookie"]
        assert browser.get("/").status_code == 200
        browser.post("/logout", data={"csrf": csrf})
        assert browser.get("/").status_code == 303


def test_every_action_needs_its_csrf_token_and_get_changes_nothing(deployment: Any, serve: Any) -> None:
    url = serve(deployment).url
    with client(url) as http:
        csrf = csrf_of(http)
        assert http.post("/queues/mail/pause").status_code == 403
        assert http.post("/queues/mail/pause", data={"csrf": "x" * 43}).status_code == 403
        assert http.post("/queues/mail/pause", data={"csrf": csrf},
                         headers={"Origin": "https://evil.example"}).status_code == 403
        assert http.get("/queues/mail/pause").status_code == 404
        assert http.request("DELETE", "/queues/mail").status_code == 405
        assert queue_active(deployment)
        done = http.post("/queues/mail/pause", data={"csrf": csrf}, headers={"Origin": url})
        assert done.status_code == 303 and "done=paused" in done.headers["location"]
        assert not queue_active(deployment)
        assert http.post("/queues/mail/resume", headers={"X-CSRF-Token": csrf}).status_code == 303
        assert queue_active(deployment)
    with client(url) as stranger:  # a token from another browser is not this one's
        stranger.get("/login")
        assert stranger.post("/queues/mail/pause", data={"csrf": csrf}).status_code == 403
    assert queue_active(deployment)


def test_read_only_hides_and_refuses_every_action(deployment: Any, serve: Any) -> None:
    job_id = deployment.enqueue("mail", {"to": "ada@example.com"}, delay=3600)
    url = serve(deployment, read_only=True).url
    with client(url) as http:
        csrf = csrf_of(http)
        for path in ("/", "/queues/mail", f"/jobs/{job_id}", "/dead", "/workers", "/cron"):
            page = http.get(path)
            assert page.status_code == 200, path
            assert 'method="post"' not in page.text, path
        for path in ("/queues/mail/pause", f"/jobs/{job_id}/cancel", f"/jobs/{job_id}/run-now", "/dead/purge"):
            refused = http.post(path, data={"csrf": csrf, "ids": str(job_id), "confirmed": "yes"})
            assert refused.status_code == 403 and "read-only" in refused.text, path
    assert queue_active(deployment)
    assert deployment.job(job_id).status is JobStatus.QUEUED


def test_pages_escape_user_data_and_carry_security_headers(deployment: Any, serve: Any) -> None:
    job_id = deployment.enqueue("mail", {"to": "<script>alert(1)</script>"})
    url = serve(deployment).url
    with client(url) as http:
        page = http.get(f"/jobs/{job_id}")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>alert(1)" not in page.text
        search = http.get("/queues/mail", params={"error": "\"><script>x</script>"})
        assert "<script>x</script>" not in search.text
        crafted = http.get("/", params={"done": "<b>you have been hacked</b>"})
        assert "hacked" not in crafted.text  # notices come from a fixed list
        for path in ("/", f"/jobs/{job_id}", "/static/dashboard.js", "/nowhere"):
            headers = http.get(path).headers
            csp = headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in page.text.replace('<script src="', "")  # no inline script at all
