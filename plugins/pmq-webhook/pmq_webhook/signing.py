"""Signing webhook requests, and checking them on the receiving side.

The signature is an HMAC-SHA256, keyed by a secret shared with the receiver,
over ``"<timestamp>.<body>"``: the Unix time (whole seconds) of the attempt,
a dot, and the exact bytes of the request body. Signing the timestamp with
the body lets a receiver refuse an old request replayed by someone who
captured it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

#: The scheme named in front of the hex digest: ``sha256=<hex>``.
SCHEME = "sha256"
#: How far (seconds) a timestamp may be from the receiver's clock, either way.
DEFAULT_TOLERANCE = 300


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """The ``X-Pmq-Signature`` header value for ``body`` sent at ``timestamp``."""
    message = _bytes(str(timestamp)) + b"." + _bytes(body)
    digest = hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def verify_signature(secret: str | bytes, timestamp: int | str, body: str | bytes, header: str, *,
                     tolerance: float | None = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    """Whether ``header`` (the ``X-Pmq-Signature`` value) signs ``body`` at
    ``timestamp`` (the ``X-Pmq-Timestamp`` value) with ``secret``.

    Pass the raw request body, before any JSON parsing: re-encoding changes
    the bytes. The header may hold several comma-separated signatures (any
    one matching is enough). With ``tolerance`` (seconds), a timestamp
    further than that from ``now`` (default: the current time) is refused,
    which stops replays; None skips that check. Comparisons take constant
    time.
    """
    text = str(timestamp).strip()
    try:
        sent_at = int(text)
    except ValueError:
        return False
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - sent_at) > tolerance:
            return False
    expected = sign(secret, text, body)
    candidates = [part.strip() for part in (header or "").split(",")]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates if candidate)
