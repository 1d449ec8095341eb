"""What a plugin declares: job types and their retry policies.

Both are plain, frozen data. The runtime reads them; nothing here talks to a
server.
"""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Union

import attrs

from pmq_core.errors import Fail, JobCancelled, Retry, shown
from pmq_core.flow import Limits
from pmq_core.keys import HIGH, LOW, NORMAL

#: The characters a queue name may use: it appears in Redis keys and URLs.
#: Matched with ``fullmatch``: ``$`` would let a trailing newline through.
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")

#: Redis band of a priority: lower numbers run sooner.
HIGH_MAX, NORMAL_MAX = 50, 150

Handler = Callable[[Any], Union[Any, Awaitable[Any]]]


def band_of(priority: int) -> str:
    """The Redis band (one of :data:`~pmq_core.keys.BANDS`) a priority falls into."""
    if priority <= HIGH_MAX:
        return HIGH
    if priority <= NORMAL_MAX:
        return NORMAL
    return LOW


def check_queue_name(name: str) -> str:
    """``name`` if it can name a queue, else ValueError saying why."""
    if not isinstance(name, str) or not QUEUE_NAME.fullmatch(name):
        raise ValueError(
            f"invalid queue name {shown(name)}: use 1-100 letters, digits and '_.:-', "
            "starting with a letter or digit"
        )
    return name


def _retry_on(value: Any) -> tuple[type[BaseException], ...]:
    items = value if isinstance(value, (tuple, list)) else (value,)
    for item in items:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"retry_on must hold exception classes, not {item!r}")
    return tuple(items)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a job type's failed attempts are retried.

    Attempt ``n`` (1-based) that fails with an exception matching
    ``retry_on`` is retried after ``base_delay * 2**n`` seconds, capped at
    ``max_delay``, then spread by ``±jitter`` (a fraction), until
    ``max_attempts`` attempts have been made; the job is then dead.
    """

    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=300.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(default=0.25, validator=[attrs.validators.ge(0), attrs.validators.le(1)])
    retry_on: tuple[type[BaseException], ...] = attrs.field(default=(Exception,), converter=_retry_on)

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` is worth another attempt under this policy."""
        if isinstance(error, Retry):
            return True
        if isinstance(error, (Fail, JobCancelled)):
            return False
        return isinstance(error, self.retry_on)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``attempt`` (1-based)."""
        raw = min(self.base_delay * (2 ** min(attempt, 62)), self.max_delay)
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return float(max(0.0, raw * (1 + spread)))


def _callable(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(f"handler of job type {instance.name!r} is not callable: {value!r}")


def _payload_class(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not attrs.has(value):
        raise TypeError(f"payload of job type {instance.name!r} must be an attrs class, not {value!r}")


def _cron(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    from croniter import croniter

    if not croniter.is_valid(value):
        raise ValueError(f"cron schedule of job type {instance.name!r} is not valid: {value!r}")


@attrs.frozen(kw_only=True)
class JobType:
    """A kind of job: the queue its jobs go to, the code that runs them, and
    their defaults.

    ``handler`` is a ``def`` or ``async def`` taking one argument, the running
    :class:`~pmq_core.models.JobContext`. ``payload``, when given, is an attrs
    class: payloads are validated against it before anything is written and
    handed to the handler as an instance of it. ``unique_key``, when given,
    maps a payload (a dict) to a string: at most one job per key is live at a
    time, and enqueueing another returns the live one's id. ``cron``, when
    given, enqueues one job (with ``cron_payload``) at each tick of that
    schedule, once across all running migrators. ``partition``, when given,
    maps a payload (a dict) to the job's partition key when the enqueue
    names none (None: the default partition); ``limits`` are the queue's
    flow-control defaults (concurrency caps and rates, for the queue and
    for each partition; see ``docs/flow-control.md``), which operators can
    override with ``pmq queues limit``.
    """

    name: str = attrs.field(converter=check_queue_name)
    handler: Handler = attrs.field(validator=_callable)
    priority: int = attrs.field(default=100, validator=attrs.validators.instance_of(int))
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, validator=attrs.validators.instance_of(RetryPolicy))
    timeout: float | None = attrs.field(default=60.0)
    payload: type | None = attrs.field(default=None, validator=_payload_class)
    unique_key: Callable[[dict[str, Any]], str] | None = None
    cron: str | None = attrs.field(default=None, validator=_cron)
    cron_payload: dict[str, Any] = attrs.field(factory=dict)
    description: str = ""
    partition: Callable[[dict[str, Any]], str | None] | None = None
    limits: Limits | None = attrs.field(default=None,
                                        validator=attrs.validators.optional(attrs.validators.instance_of(Limits)))

    @timeout.validator
    def _check_timeout(self, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError(f"timeout of job type {self.name!r} must be positive or None, not {value!r}")

    @property
    def is_async(self) -> bool:
        """True for ``async def`` handlers, which run on the worker's event loop."""
        call = type(self.handler).__call__ if not inspect.isroutine(self.handler) else None
        return inspect.iscoroutinefunction(self.handler) or inspect.iscoroutinefunction(call)

    @property
    def band(self) -> str:
        return band_of(self.priority)

    def describe(self) -> dict[str, Any]:
        """Plain data about this job type, for listings."""
        return {
            "name": self.name,
            "priority": self.priority,
            "band": self.band,
            "timeout": self.timeout,
            "async": self.is_async,
            "payload": self.payload.__name__ if self.payload else None,
            "cron": self.cron,
            "limits": self.limits.describe() if self.limits else None,
            "retry": {
                "max_attempts": self.retry.max_attempts,
                "base_delay": self.retry.base_delay,
                "max_delay": self.retry.max_delay,
                "jitter": self.retry.jitter,
                "retry_on": [e.__name__ for e in self.retry.retry_on],
            },
        }


def seconds(value: float | timedelta) -> float:
    """A delay given as seconds or a timedelta, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
