"""webhook:process, one attempt at a time (run_inline): what each answer of a
real HTTP receiver makes of the job."""

from __future__ import annotations

import json
import time
import uuid
from email.utils import formatdate

import pytest
from pmq_webhook import job_type, plugin, sign, verify_signature
from pmq_webhook.delivery import retry_after
from webhook_receiver import SECRET, STALL

from pmq_core import Fail, PayloadError, Retry
from pmq_core.plugins import Plugins
from pmq_core.testing import run_inline

BODY = {"order": 42, "state": "paid", "note": "café"}


def test_request_is_signed_so_the_receiver_can_verify_it(receiver, webhook_env):
    result = run_inline(job_type(), {"url": receiver.url + "?tenant=7", "body": BODY, "event": "order.paid",
                                     "headers": {"X-Tenant": "7"}})
    assert result == {"status": 200}
    [request] = receiver.requests
    headers = request.headers
    assert request.path == "/hooks?tenant=7"
    assert json.loads(request.body) == BODY
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Pmq-Event"] == "order.paid" and headers["X-Tenant"] == "7"
    assert headers["X-Pmq-Attempt"] == "1" and headers["X-Pmq-Delivery"]
    assert headers["X-Pmq-Signature"].startswith("sha256=")
    timestamp = headers["X-Pmq-Timestamp"]
    assert verify_signature(webhook_env, timestamp, request.body, headers["X-Pmq-Signature"])
    assert not verify_signature("another-secret", timestamp, request.body, headers["X-Pmq-Signature"])
    assert not verify_signature(webhook_env, timestamp, request.body + b" ", headers["X-Pmq-Signature"])


def test_verify_signature_refuses_replays_and_accepts_any_listed_signature():
    body = b'{"a":1}'
    sent = int(time.time()) - 3600
    header = sign("s3cret", sent, body)
    assert not verify_signature("s3cret", sent, body, header)
    assert verify_signature("s3cret", sent, body, header, tolerance=None)
    assert verify_signature("s3cret", sent, body, f"sha256=00ff, {header}", now=sent + 10)
    assert not verify_signature("s3cret", "not-a-time", body, header, tolerance=None)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_is_delivered(receiver, webhook_env, status):
    receiver.script(status)
    assert run_inline(job_type(), {"url": receiver.url, "body": BODY}) == {"status": status}


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_server_errors_and_throttling_retry_with_backoff(receiver, webhook_env, status):
    receiver.script((status, {}, b"busy, come back later"))
    with pytest.raises(Retry) as caught:
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert caught.value.delay is None
    assert f"HTTP {status}" in str(caught.value) and "busy, come back later" in str(caught.value)


def test_retry_after_seconds_sets_the_delay(receiver, webhook_env):
    receiver.script((429, {"Retry-After": "7"}, b""))
    with pytest.raises(Retry) as caught:
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert caught.value.delay == 7.0


def test_retry_after_http_date_sets_the_delay(receiver, webhook_env):
    receiver.script((503, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}, b""))
    with pytest.raises(Retry) as caught:
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert 100 <= caught.value.delay <= 121


def test_retry_after_is_capped_by_the_retry_policy(receiver, webhook_env):
    receiver.script((503, {"Retry-After": "999999"}, b""))
    with pytest.raises(Retry) as caught:
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert caught.value.delay == job_type().retry.max_delay


def test_retry_after_parsing():
    now = 1_700_000_000.0
    assert retry_after("120", now) == 120.0
    assert retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_fail_at_once(receiver, webhook_env, status):
    receiver.script((status, {}, b"no such hook"))
    with pytest.raises(Fail, match=f"HTTP {status}.*no such hook"):
        run_inline(job_type(), {"url": receiver.url, "body": BODY})


def test_redirects_are_not_followed(receiver, webhook_env):
    receiver.script((301, {"Location": "http://elsewhere.invalid/"}, b""))
    with pytest.raises(Fail, match="redirects are not followed"):
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert len(receiver.requests) == 1


def test_timeout_retries(receiver, webhook_env):
    receiver.script(STALL)
    with pytest.raises(Retry, match="timed out after 0.5s"):
        run_inline(job_type(), {"url": receiver.url, "body": BODY})


def test_connection_refused_retries(refused_url, webhook_env):
    with pytest.raises(Retry, match="ConnectionRefusedError"):
        run_inline(job_type(), {"url": refused_url, "body": BODY})


def test_without_a_secret_nothing_is_sent(receiver, monkeypatch):
    monkeypatch.delenv("PMQ_WEBHOOK_SECRET", raising=False)
    with pytest.raises(Fail, match="PMQ_WEBHOOK_SECRET is not set"):
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert receiver.requests == []


def test_a_bad_timeout_setting_is_named(receiver, monkeypatch):
    monkeypatch.setenv("PMQ_WEBHOOK_SECRET", "another-test-secret-93d1")
    monkeypatch.setenv("PMQ_WEBHOOK_TIMEOUT", "soon")
    with pytest.raises(Fail, match=r"expected a number, got 'soon' @ webhook.timeout"):
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    monkeypatch.setenv("PMQ_WEBHOOK_TIMEOUT", "-1")
    with pytest.raises(Fail, match="timeout must be a positive number of seconds, not -1.0 @ webhook"):
        run_inline(job_type(), {"url": receiver.url, "body": BODY})
    assert receiver.requests == []


def test_settings_come_from_the_settings_files_too(receiver, monkeypatch, tmp_path):
    monkeypatch.delenv("PMQ_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("PMQ_WEBHOOK_TIMEOUT", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pmq.toml").write_text(f'[webhook]\nsecret = "{SECRET}"\ntimeout = 2\n', encoding="utf-8")
    assert run_inline(job_type(), {"url": receiver.url, "body": BODY}) == {"status": 200}
    [request] = receiver.requests
    assert verify_signature(SECRET, request.headers["X-Pmq-Timestamp"], request.body,
                            request.headers["X-Pmq-Signature"])


@pytest.mark.parametrize(("payload", "problem"), [
    ({"url": "ftp://example.com/x", "body": {}}, "url must start with http:// or https://"),
    ({"url": "https:///x", "body": {}}, "url has no host"),
    ({"url": "https://user:pw@example.com/", "body": {}}, "must not hold credentials"),
    ({"url": "https://example.com/", "body": [1]}, "expected an object, got an array [1] @ payload.body"),
    ({"url": "https://example.com/"}, "required field missing @ payload.body"),
    ({"url": "https://example.com/", "body": {}, "headers": {"Authorization": "Bearer x"}}, "carries credentials"),
    ({"url": "https://example.com/", "body": {}, "headers": {"X-Pmq-Signature": "x"}}, "is set by pmq-webhook"),
    ({"url": "https://example.com/", "body": {}, "headers": {"X-A": "1\r\nX-B: 2"}}, "line break"),
    ({"url": "https://example.com/", "body": {}, "headers": {"X-A\n": "1"}}, "not a valid HTTP header name"),
    ({"url": "https://example.com/", "body": {}, "event": "two words"}, "event must be"),
    ({"url": "https://example.com/", "body": {}, "event": "sent\n"}, "event must be"),
    ({"url": "https://example.com/", "body": {}, "secret": "x"}, "extra fields found (secret)"),
])
def test_bad_payloads_are_refused_with_the_reason(payload, problem):
    with pytest.raises(PayloadError) as caught:
        run_inline(job_type(), payload)
    assert problem in str(caught.value)


def test_a_worker_without_a_secret_says_so_when_it_starts(monkeypatch, caplog):
    worker_id = uuid.uuid4()
    monkeypatch.delenv("PMQ_WEBHOOK_SECRET", raising=False)
    unset = Plugins(["webhook"]).plugin_settings()
    plugin.pmq_worker_started(worker_id=worker_id, queues=["other"], plugin_settings=unset)
    assert caplog.records == []
    plugin.pmq_worker_started(worker_id=worker_id, queues=["webhook:process"], plugin_settings=unset)
    [record] = caplog.records
    assert record.levelname == "ERROR" and "PMQ_WEBHOOK_SECRET is not set" in record.getMessage()
    caplog.clear()
    monkeypatch.setenv("PMQ_WEBHOOK_SECRET", "another-test-secret-93d1")
    plugin.pmq_worker_started(worker_id=worker_id, queues=["webhook:process"],
                              plugin_settings=Plugins(["webhook"]).plugin_settings())
    assert caplog.records == []
