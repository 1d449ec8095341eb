"""The values the schema admits, as Python sees them.

Schema version 4 (``sql/migrations/0004_values_python_can_read.sql``)
refuses any time Python's ``datetime`` could not hold in some time zone, so
that no stored row can stop a migrator or a worker reading it back. The
client and the CLI refuse such times before writing (one clear error instead
of a constraint violation), and the worker keeps the retry times it computes
inside the range.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pmq_core.errors import PayloadError

#: Longest error message kept in ``jobs.last_error_message`` and ``job_logs``.
MAX_ERROR_LENGTH = 2000
#: Largest PostgreSQL ``integer``.
INT32 = 2**31 - 1
#: Earliest time a job may carry (inclusive): a day after Python's earliest,
#: so that it is a valid ``datetime`` in any time zone.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
#: Latest time a job may carry (exclusive): a day before Python's latest.
LATEST = datetime(9999, 12, 31, tzinfo=UTC)


def check_time(name: str, value: datetime) -> datetime:
    """``value`` (timezone-aware) if a job may carry it, else PayloadError
    naming it and the range."""
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:  # e.g. datetime.min at +14:00 is before year 1 in UTC
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc < LATEST:
        raise PayloadError(f"{name} {value.isoformat()} is outside the supported range "
                           f"{EARLIEST.isoformat()} to {LATEST.isoformat()} (exclusive)")
    return value


def later(start: datetime, seconds: Any) -> datetime:
    """``start`` plus ``seconds``, never past the supported range: how the
    worker dates a retry, whatever delay a handler asked for (one that is not
    a positive number counts as none)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        return start
    room = (LATEST - start).total_seconds() - 1
    return start + timedelta(seconds=min(seconds, room))


def error_text(exc: BaseException) -> str:
    """The error as stored in PostgreSQL: shortened, and without what text
    columns cannot hold (NUL, lone surrogates), so that a handler's odd
    message cannot fail the write of a whole round."""
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception:  # a __str__ that fails, or an int too long to print
        text = f"{type(exc).__name__} (its message cannot be shown)"
    text = text[:MAX_ERROR_LENGTH].replace("\x00", "\\0")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
