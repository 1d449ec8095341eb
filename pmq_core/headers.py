"""Job headers: a few text entries carried beside a job's payload, for plugins.

A tracing plugin writes W3C trace context here when a job is enqueued
(``pmq_wrap_enqueue``) and reads it back when the job runs
(``job.headers``), so that the payload stays the user's own. Headers are
checked before anything is written, like payloads; what a worker reads back
is taken as it comes: the column is written by other programs too (schema
migration 0009), so anything but text entries is ignored and the job runs.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from typing import Any

from pmq_core.errors import PayloadError, shown

#: Largest headers object, in bytes of its JSON text: the bound that schema
#: migration 0009's CHECK enforces on every writer. W3C trace context takes
#: under 600 bytes (traceparent 55, tracestate at most 512).
MAX_HEADERS_BYTES = 4096

#: What a job without headers reads.
NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})


def to_json(headers: Mapping[str, str]) -> str | None:
    """The JSON text to store for ``headers`` (None for none), or
    PayloadError naming the first entry that cannot be stored."""
    if not headers:
        return None
    for key, value in headers.items():
        if not isinstance(key, str) or not key:
            raise PayloadError(f"job header names must be non-empty strings, got {shown(key)}")
        if not isinstance(value, str):
            raise PayloadError(f"job header {shown(key)} must be a string, got {type(value).__name__}")
        if "\x00" in key or "\x00" in value:
            raise PayloadError(f"job header {shown(key)} contains a NUL character, which PostgreSQL cannot store")
    text = json.dumps(dict(headers), separators=(",", ":"), ensure_ascii=False)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError("a job header contains a lone surrogate, which is not valid unicode") from None
    if size > MAX_HEADERS_BYTES:
        raise PayloadError(f"job headers take {size} bytes, over the limit of {MAX_HEADERS_BYTES}")
    return text


def from_stored(value: Any) -> Mapping[str, str]:
    """The text entries of a stored headers value; anything else (NULL, an
    array, a number, an unreadable value, an entry that is not text) is
    left out, never an error."""
    if not isinstance(value, Mapping):
        return NO_HEADERS
    return types.MappingProxyType({k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)})
