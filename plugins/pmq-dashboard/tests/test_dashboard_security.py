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


def run_pmq(*args: str, **env: str) -> Any:
    """``pmq ARGS`` in this process, with the plugins' commands, as a user runs it."""
    from click.testing import CliRunner

    from pmq_core.cli import cli

    environ = {k: None for k in os.environ if k.startswith("PMQ_DASHBOARD_")}
    return CliRunner().invoke(cli, list(args), env={**environ, **env})


def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    result = run_pmq("dashboard", "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.output
    assert "PMQ_DASHBOARD_TOKEN" in result.output
    short = run_pmq("dashboard", "--host", "0.0.0.0", "--port", "1", PMQ_DASHBOARD_TOKEN="abc")
    assert short.exit_code == 1 and "at least 16 characters" in short.output
    assert "abc" not in short.output  # a secret is never echoed


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


def test_hostile_requests_get_a_clear_answer_and_the_server_goes_on(deployment: Any, serve: Any) -> None:
    url = serve(deployment).url
    with client(url) as http:
        csrf = csrf_of(http)
        answers = {
            "/queues/mail%00x": 400, "/queues/mail?error=a%00b": 400, "/queues/" + "q" * 5000: 404,
            "/queues/mail?status=exploded": 400, "/queues/mail?since=yesterday": 400,
            "/queues/mail?after=%27%3B--": 400, "/queues/mail?id=not-a-uuid": 400, "/jobs/%2e%2e": 404,
            "/dead?after=x": 400, "/static/../security.py": 404,
        }
        for path, status in answers.items():
            assert http.get(path).status_code == status, path
        assert http.post("/dead/replay", data={"csrf": csrf, "ids": "nope"}).status_code == 404
        dead = deployment.enqueue("mail", {}, delay=3600)
        assert http.post("/dead/explode", data={"csrf": csrf, "ids": str(dead)}).status_code == 404
        assert http.post("/jobs/nope/cancel", data={"csrf": csrf}).status_code == 404
        assert http.post("/queues/nowhere/pause", data={"csrf": csrf}).status_code == 404
        assert http.get("/").status_code == 200  # still serving


def test_the_pmq_dashboard_command_serves_on_loopback_with_its_settings(deployment: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = deployment.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_")}
    env.update(PMQ_DATABASE_URL=settings.database_url, PMQ_REDIS_URL=settings.redis_url,
               PMQ_KEY_PREFIX=settings.key_prefix, PMQ_DASHBOARD_TOKEN=TOKEN, PMQ_DASHBOARD_PORT=str(port))
    process = subprocess.Popen([sys.executable, "-m", "pmq_core.cli", "dashboard", "--read-only"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"pmq dashboard on http://127.0.0.1:{port}/ (read-only); " \
                                                    "Ctrl-C stops it"
        with client(f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            from pmq_core.testing import wait_until

            page = wait_until(lambda: _get_or_none(http, "/queues/mail"), lambda r: r is not None, 20,
                              "the dashboard did not answer")
            assert page.status_code == 200 and "read-only" in page.text
            assert 'action="/logout"' in page.text and "Pause queue" not in page.text
            assert http.get("/", headers={"Authorization": "Bearer nope"}).status_code == 303
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert TOKEN not in process.stderr.read() if process.stderr else True


def _get_or_none(http: Any, path: str) -> Any:
    try:
        return http.get(path)
    except httpx.TransportError:
        return None
