"""The ``webhook:process`` job type: one signed HTTP POST per attempt.

What a response means is decided here, once: a 2xx is delivered; 408, 429,
any 5xx, a time-out or a connection error is worth another attempt (after the
``Retry-After`` the receiver asked for, when it gave one); anything else is
the receiver refusing the request, which repeating will not change, so the
job fails at once and waits in the dead-letter queue for an operator.

Redirects are not followed: a POST redirected is usually a misconfigured URL,
and following it would send a signed body somewhere nobody chose.
"""

import email.utils
import http.client
import importlib.metadata
import json
import math
import re
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import attrs

from pmq_core import ConfigurationError, Fail, JobContext, JobType, Retry, RetryPolicy, load_plugin_settings
from pmq_webhook.signing import sign

try:
    VERSION = importlib.metadata.version("pmq-webhook")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"
#: The job type's name, which is also its queue.
NAME = "webhook:process"
#: The section of the plugin's settings: ``[tool.pmq.webhook]``, ``[webhook]``
#: in pmq.toml, ``PMQ_WEBHOOK_*`` in the environment.
SECTION = "webhook"
#: Socket timeout of a request, kept below the job's 15 s so that a slow
#: receiver is reported as a time-out of the request, not of the job.
DEFAULT_REQUEST_TIMEOUT = 10.0
#: About 70 minutes of attempts: retries 2 s, 4 s, 8 s ... 34 min apart; a
#: Retry-After is honoured up to an hour.
DEFAULT_RETRY = RetryPolicy(max_attempts=12, base_delay=1.0, max_delay=3600.0, retry_on=(TimeoutError,))
#: Statuses that mean "not now" rather than "no".
RETRY_STATUSES = frozenset({408, 429})
#: Most bytes of a response body read (and quoted in error messages: 200).
MAX_RESPONSE_BYTES = 65536
MAX_URL_LENGTH = 2048

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Headers pmq sets itself: a payload may not override them.
_RESERVED = frozenset({"host", "content-length", "content-type", "transfer-encoding", "connection",
                       "user-agent"})
#: Headers that carry credentials: payloads hold no secrets (they sit in the
#: database and the dead-letter queue); receivers authenticate by signature.
_CREDENTIALS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _check_url(instance: Any, attribute: Any, value: str) -> None:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"url is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url must start with http:// or https://, not {value[:100]!r}")
    if not parts.hostname:
        raise ValueError(f"url has no host: {value[:100]!r}")
    if parts.username or parts.password:
        raise ValueError("url must not hold credentials (user:password@): payloads are stored in clear")
    try:
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"url has an invalid port: {value[:100]!r}") from None
    if any(ch in value for ch in "\r\n\x00 "):
        raise ValueError("url must not contain spaces or control characters")


def _check_headers(instance: Any, attribute: Any, value: Mapping[str, str]) -> None:
    for name, text in value.items():
        lower = name.lower()
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if lower in _RESERVED or lower.startswith("x-pmq-"):
            raise ValueError(f"header {name!r} is set by pmq-webhook and cannot be given in the payload")
        if lower in _CREDENTIALS:
            raise ValueError(f"header {name!r} carries credentials, which payloads must not hold; "
                             "receivers authenticate requests by their X-Pmq-Signature")
        if any(ch in text for ch in "\r\n\x00"):
            raise ValueError(f"header {name!r} has a line break or NUL in its value")


def _check_event(instance: Any, attribute: Any, value: str | None) -> None:
    if value is not None and not (0 < len(value) <= 200 and _TOKEN.fullmatch(value)):
        raise ValueError(f"event must be 1-200 letters, digits or punctuation without spaces, not {value!r}")


@attrs.frozen(kw_only=True)
class WebhookPayload:
    """What to deliver: ``body`` (a JSON object) POSTed to ``url``, with
    optional extra ``headers`` and an ``event`` name sent as ``X-Pmq-Event``."""

    url: str = attrs.field(validator=_check_url)
    body: dict[str, Any]
    headers: dict[str, str] = attrs.field(factory=dict, validator=_check_headers)
    event: str | None = attrs.field(default=None, validator=_check_event)


def _positive_seconds(instance: Any, attribute: Any, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {value!r}")


@attrs.frozen(kw_only=True)
class WebhookSettings:
    """The plugin's settings, read by pmq from the workers' settings (never
    from a payload: a secret must not be stored with the jobs)."""

    secret: str | None = attrs.field(default=None, repr=False, metadata={"secret": True},
                                     converter=lambda value: value.strip() or None if value else None)
    """The key of the HMAC-SHA256 signatures, shared with the receivers
    (``PMQ_WEBHOOK_SECRET``). Required to send anything."""
    timeout: float = attrs.field(default=DEFAULT_REQUEST_TIMEOUT, validator=_positive_seconds)
    """Seconds a request may wait on the network, connecting and per read
    (``PMQ_WEBHOOK_TIMEOUT``); keep it below the job's 15 s timeout."""

    @classmethod
    def current(cls) -> "WebhookSettings":
        """The settings as they are now, or :class:`pmq_core.Fail` naming
        what is wrong (retrying cannot help until an operator fixes it)."""
        try:
            return load_plugin_settings(SECTION, cls)
        except ConfigurationError as exc:
            raise Fail(str(exc)) from None

    def require_secret(self) -> str:
        if self.secret is None:
            raise Fail(f"{MISSING_SECRET}; set it on the workers, then replay the dead jobs")
        return self.secret


#: What a worker without a signing secret is told, at start and per job.
MISSING_SECRET = "PMQ_WEBHOOK_SECRET is not set: pmq-webhook never sends unsigned requests"


@attrs.frozen
class Response:
    """What the receiver answered."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Response:
    """POST ``body`` to ``url`` (no redirects followed); OSError,
    TimeoutError or http.client.HTTPException when no answer came."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                 context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        answer = connection.getresponse()
        content = answer.read(MAX_RESPONSE_BYTES)
        return Response(answer.status, answer.reason, {k.lower(): v for k, v in answer.getheaders()}, content)
    finally:
        connection.close()


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an
    HTTP-date), or None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return max(0.0, (when - current).total_seconds())


def _where(url: str) -> str:
    """The URL without its query, for messages (a query may hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


def _excerpt(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""


def request_headers(job: JobContext, payload: WebhookPayload, body: bytes, secret: str,
                    timestamp: int) -> dict[str, str]:
    """Every header of one attempt's request, the signature included."""
    headers = dict(payload.headers)
    headers.update({
        "Content-Type": "application/json",
        "User-Agent": f"pmq-webhook/{VERSION}",
        "X-Pmq-Delivery": str(job.id),
        "X-Pmq-Attempt": str(job.attempt),
        "X-Pmq-Timestamp": str(timestamp),
        "X-Pmq-Signature": sign(secret, timestamp, body),
    })
    if payload.event:
        headers["X-Pmq-Event"] = payload.event
    return headers


def make_handler(max_delay: float) -> Any:
    """The handler, honouring ``Retry-After`` up to ``max_delay`` seconds."""

    def deliver(job: JobContext) -> dict[str, Any]:
        payload: WebhookPayload = job.payload
        config = WebhookSettings.current()
        secret = config.require_secret()
        body = json.dumps(payload.body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = request_headers(job, payload, body, secret, int(time.time()))
        where = _where(payload.url)
        try:
            answer = post(payload.url, body, headers, config.timeout)
        except TimeoutError:
            raise Retry(f"POST {where} timed out after {config.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            detail = str(exc) or type(exc).__name__
            raise Retry(f"POST {where} failed: {type(exc).__name__}: {detail}") from None
        status = f"HTTP {answer.status} {answer.reason}".strip()
        if 200 <= answer.status < 300:
            return {"status": answer.status}
        if answer.status in RETRY_STATUSES or answer.status >= 500:
            wait = retry_after(answer.headers.get("retry-after"))
            raise Retry(f"{status} from {where}{_excerpt(answer.body)}",
                        delay=None if wait is None else min(wait, max_delay))
        if 300 <= answer.status < 400:
            raise Fail(f"{status} from {where}: redirects are not followed; enqueue the final URL")
        raise Fail(f"{status} from {where}{_excerpt(answer.body)}")

    return deliver


def job_type(*, retry: RetryPolicy = DEFAULT_RETRY, timeout: float = 15.0, priority: int = 100) -> JobType:
    """The ``webhook:process`` job type; tests pass a quicker ``retry``."""
    return JobType(name=NAME, handler=make_handler(retry.max_delay), priority=priority, retry=retry,
                   timeout=timeout, payload=WebhookPayload,
                   description="POST a signed JSON body to a URL, retrying while the receiver is unavailable")
