"""webhook:process through a real pmq (PostgreSQL, Redis, migrator, worker):
how deliveries end, after how many attempts, with which job_logs."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from pmq_webhook import job_type, plugin, verify_signature
from webhook_receiver import STALL

from pmq_core import JobStatus, RetryPolicy, hookimpl

#: Quick retries, so that a test sees several attempts in well under a second.
QUICK = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=5.0, retry_on=(TimeoutError,))


class QuickWebhooks:
    """webhook:process with quick retries, noting each failed attempt's
    ``retry_in`` as the worker computed it."""

    def __init__(self) -> None:
        self.retry_in: list[float | None] = []
        self.lock = threading.Lock()

    @hookimpl
    def pmq_register_job_types(self) -> list[Any]:
        return [job_type(retry=QUICK)]

    @hookimpl
    def pmq_job_failed(self, job: Any, error: BaseException, will_retry: bool, retry_in: float | None) -> None:
        with self.lock:
            self.retry_in.append(retry_in)


def logs(runtime: Any, job_id: Any) -> list[tuple[str, int]]:
    with psycopg.connect(runtime.settings.database_url) as conn:
        return conn.execute("SELECT status, attempt_number FROM job_logs WHERE job_id = %s ORDER BY id",
                            (job_id,)).fetchall()


def test_delivery_completes_through_the_installed_plugin_module(pmq_runtime, receiver, webhook_env):
    rt = pmq_runtime(plugin)
    job_id = rt.enqueue("webhook:process", {"url": receiver.url, "body": {"n": 1}, "event": "ping"})
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 1
    assert logs(rt, job_id) == [("success", 1)]
    [request] = receiver.requests
    assert request.headers["X-Pmq-Delivery"] == str(job_id)
    assert verify_signature(webhook_env, request.headers["X-Pmq-Timestamp"], request.body,
                            request.headers["X-Pmq-Signature"])


def test_server_error_then_success_completes_on_the_second_attempt(pmq_runtime, receiver, webhook_env):
    receiver.script(503)
    rt = pmq_runtime(QuickWebhooks())
    job_id = rt.enqueue("webhook:process", {"url": receiver.url, "body": {"n": 2}})
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 2
    assert logs(rt, job_id) == [("retry", 1), ("success", 2)]
    assert [r.headers["X-Pmq-Attempt"] for r in receiver.requests] == ["1", "2"]
    assert receiver.requests[0].headers["X-Pmq-Delivery"] == receiver.requests[1].headers["X-Pmq-Delivery"]


def test_retry_after_is_the_delay_of_the_next_attempt(pmq_runtime, receiver, webhook_env):
    receiver.script((429, {"Retry-After": "1"}, b"slow down"))
    hooks = QuickWebhooks()
    rt = pmq_runtime(hooks)
    job_id = rt.enqueue("webhook:process", {"url": receiver.url, "body": {"n": 3}})
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 2
    assert hooks.retry_in == [1.0]
    assert logs(rt, job_id) == [("retry", 1), ("success", 2)]


def test_not_found_is_dead_at_once(pmq_runtime, receiver, webhook_env):
    receiver.script((404, {}, b"unknown hook"))
    rt = pmq_runtime(QuickWebhooks())
    job_id = rt.enqueue("webhook:process", {"url": receiver.url, "body": {"n": 4}})
    job = rt.wait(job_id)
    assert job.status is JobStatus.FAILED and job.attempt_count == 1
    assert "HTTP 404" in job.last_error_message
    assert logs(rt, job_id) == [("failed", 1)]
    assert len(receiver.requests) == 1


def test_persistent_server_errors_end_dead_after_max_attempts(pmq_runtime, receiver, webhook_env):
    receiver.script(500, 502, 503)
    rt = pmq_runtime(QuickWebhooks())
    job_id = rt.enqueue("webhook:process", {"url": receiver.url, "body": {"n": 5}})
    job = rt.wait(job_id)
    assert job.status is JobStatus.FAILED and job.attempt_count == 3
    assert "HTTP 503" in job.last_error_message
    assert logs(rt, job_id) == [("retry", 1), ("retry", 2), ("failed", 3)]


def test_timeout_retries_then_completes(pmq_runtime, receiver, webhook_env):
    receiver.script(STALL)
    rt = pmq_runtime(QuickWebhooks())
    job_id = rt.enqueue("webhook:process", {"url": receiver.url, "body": {"n": 6}})
    job = rt.wait(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt_count == 2
    assert logs(rt, job_id) == [("retry", 1), ("success", 2)]


@pytest.mark.parametrize("secret", [True, False], ids=["refused", "no-secret"])
def test_refused_connections_retry_until_dead_and_a_missing_secret_fails_at_once(
        pmq_runtime, refused_url, webhook_env, monkeypatch, secret):
    if not secret:
        monkeypatch.delenv("PMQ_WEBHOOK_SECRET")
    rt = pmq_runtime(QuickWebhooks())
    job_id = rt.enqueue("webhook:process", {"url": refused_url, "body": {"n": 7}})
    job = rt.wait(job_id)
    assert job.status is JobStatus.FAILED
    if secret:
        assert job.attempt_count == 3 and "ConnectionRefusedError" in job.last_error_message
        assert logs(rt, job_id) == [("retry", 1), ("retry", 2), ("failed", 3)]
    else:
        assert job.attempt_count == 1 and "PMQ_WEBHOOK_SECRET is not set" in job.last_error_message
        assert logs(rt, job_id) == [("failed", 1)]
