"""Payloads: JSON objects, small, checked before anything is written.

A payload is stored as ``jsonb`` and handed back to a handler as a dict or, when
the job type declares a payload class, as an instance of it. Nothing here can
make code run: payloads are data, never pickles.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import attrs
import cattrs
import cattrs.v

from pmq_core.errors import PayloadError

_converter = cattrs.Converter(forbid_extra_keys=True)
#: Compact JSON that refuses NaN and infinities; one encoder for every call
#: (json.dumps with options builds a new one each time).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
#: A NUL character as JSON escapes it (an odd number of backslashes before
#: u0000): jsonb refuses it, so it must be caught before the write.
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _find_non_finite(value: Any, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_non_finite(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_non_finite(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _describe(exc: BaseException, type_: type | None) -> str:
    """cattrs' wording for one problem, plus the message a payload class's
    own validator gave (which cattrs alone would drop)."""
    message = cattrs.v.format_exception(exc, type_)
    detail = str(exc)
    if isinstance(exc, (ValueError, TypeError)) and detail and detail not in message:
        return f"{message} ({detail})"
    return message


def to_json(payload: Any, *, queue: str, payload_class: type | None, limit: int) -> str:
    """The payload as compact JSON text, or PayloadError naming every problem.

    ``payload`` is a dict, or an instance of ``payload_class``. With a payload
    class, a dict is first structured into it, so that a typo or a wrong type
    is caught here rather than in the worker.
    """
    if payload_class is not None:
        if isinstance(payload, payload_class):
            data = _converter.unstructure(payload)
        elif isinstance(payload, dict):
            odd_keys = [key for key in payload if not isinstance(key, str)]
            if odd_keys:
                raise PayloadError(f"invalid payload for {queue!r}: keys must be strings, got {odd_keys[0]!r}")
            try:
                _converter.structure(payload, payload_class)
            except cattrs.BaseValidationError as exc:
                problems = "; ".join(cattrs.transform_error(exc, path="payload", format_exception=_describe))
                raise PayloadError(f"invalid payload for {queue!r}: {problems}") from None
            except (TypeError, ValueError) as exc:
                raise PayloadError(f"invalid payload for {queue!r}: {exc}") from None
            data = payload
        else:
            raise PayloadError(
                f"invalid payload for {queue!r}: expected a dict or a {payload_class.__name__}, "
                f"got {type(payload).__name__}"
            )
    elif attrs.has(type(payload)):
        data = _converter.unstructure(payload)
    else:
        data = payload
    if not isinstance(data, dict):
        raise PayloadError(f"invalid payload for {queue!r}: must be a JSON object (a dict), got {type(data).__name__}")
    try:
        text = _encode(data)
    except RecursionError:
        raise PayloadError(f"invalid payload for {queue!r}: nested too deeply") from None
    except (TypeError, ValueError) as exc:
        # The encoder refuses NaN and infinities without saying where: find it.
        bad = _find_non_finite(data, "payload") if isinstance(exc, ValueError) else None
        if bad:
            raise PayloadError(f"invalid payload for {queue!r}: {bad} is NaN or infinite, "
                               "which JSON cannot hold") from None
        raise PayloadError(f"invalid payload for {queue!r}: not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise PayloadError(f"invalid payload for {queue!r}: contains a NUL character, which PostgreSQL cannot store")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(f"invalid payload for {queue!r}: contains a lone surrogate, "
                           "which is not valid unicode") from None
    if size > limit:
        raise PayloadError(
            f"invalid payload for {queue!r}: {size} bytes is over the limit of {limit} bytes; "
            "store large data elsewhere and put its key in the payload"
        )
    return text


#: Characters of an unreadable payload's text kept to show what it was.
UNREADABLE_PREFIX = 200


@attrs.frozen
class UnreadablePayload:
    """A stored payload Python cannot decode: valid ``jsonb`` that holds an
    integer of more than 4,300 digits, or nests deeper than Python's
    recursion limit. PostgreSQL cannot refuse such a value by a simple
    CHECK, so pmq reads it back as this marker instead of failing the whole
    read: the worker ends its job dead, and listings show it. ``prefix`` is
    the start of the stored text."""

    reason: str
    prefix: str

    def __str__(self) -> str:
        return f"<unreadable payload ({self.reason}): {self.prefix}>"


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode JSON read from PostgreSQL; a value Python cannot decode becomes
    an :class:`UnreadablePayload` rather than an exception."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8", "replace")
        prefix = text[:UNREADABLE_PREFIX] + ("…" if len(text) > UNREADABLE_PREFIX else "")
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        return UnreadablePayload(reason, prefix)


def structure(data: dict[str, Any], payload_class: type | None) -> Any:
    """A stored payload as its handler receives it."""
    if payload_class is None:
        return data
    return _converter.structure(data, payload_class)
