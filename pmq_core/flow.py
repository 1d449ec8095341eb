"""Flow control: what limits a queue can carry, and how much of a queue the
migrator may hand to Redis under them.

A queue's jobs may carry a *partition* key (a mailbox, a customer); jobs
without one belong to the queue's default partition. Limits are of two
kinds, each for the whole queue or for each partition:

- a *concurrency cap*: at most N jobs in flight (handed to Redis or
  running) at once, across every worker;
- a *rate*: at most N job starts in any window of one period.

The leading migrator enforces both, because it alone decides which jobs
reach Redis and a worker can start only a job it was handed: see
``docs/flow-control.md`` for why that holds with any number of workers.
This module is the arithmetic, without a server: parsing and checking
limits, and turning the counts the store reads into budgets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from pmq_core.errors import shown

#: Longest partition key, in UTF-8 bytes (the schema checks it too).
MAX_PARTITION_BYTES = 200
#: Longest rate period: a year (and a day), in seconds.
MAX_PERIOD = 366 * 86400

#: Limits for the whole queue, for each partition, or for one partition
#: (an override of the per-partition limits).
QUEUE, EACH, PARTITION = "queue", "each", "partition"
SCOPES = (QUEUE, EACH, PARTITION)
#: Where a limit comes from: a job type's declaration, or an operator.
DECLARED, OPERATOR = "declared", "operator"

_PERIODS = {"s": 1, "second": 1, "m": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_RATE = re.compile(r"\s*(\d{1,9})\s*/\s*(\d{0,7})\s*([a-z]+)\s*", re.IGNORECASE)


def check_partition(value: Any) -> str | None:
    """``value`` if it can be a partition key (None: the default partition),
    else ValueError saying why."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"partition must be a string, got {type(value).__name__} {shown(value)}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"partition {shown(value)} contains a lone surrogate, which is not valid unicode") from None
    if not value or "\x00" in value:
        raise ValueError(f"partition must be a non-empty string without NUL characters, got {shown(value)}")
    if size > MAX_PARTITION_BYTES:
        raise ValueError(f"partition is {size} bytes, over the limit of {MAX_PARTITION_BYTES}")
    return value


def _positive_count(instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise ValueError(f"{attribute.name} must be a whole number from 1 to {2**31 - 1}, got {shown(value)}")


@attrs.frozen
class Rate:
    """At most ``count`` starts in any window of ``period`` seconds."""

    count: int = attrs.field(validator=_positive_count)
    period: int = attrs.field()

    @period.validator
    def _check_period(self, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PERIOD:
            raise ValueError(f"rate period must be a whole number of seconds from 1 to {MAX_PERIOD}, "
                             f"got {shown(value)}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``N/PERIOD``: PERIOD is ``s``, ``m``, ``h``, ``d`` or the word
        (``second``, ``minutes``...), optionally with a multiple (``10/5m``)."""
        match = _RATE.fullmatch(text) if isinstance(text, str) else None
        unit = _unit(match[3].lower()) if match else None
        if match is None or unit is None:
            raise ValueError(f"rate {shown(text)} is not N/PERIOD, e.g. 100/s, 20/minute, 500/d, 10/5m")
        return cls(int(match[1]), int(match[2] or 1) * unit)

    def __str__(self) -> str:
        for name, unit in (("d", 86400), ("h", 3600), ("m", 60)):
            if self.period % unit == 0:
                multiple = self.period // unit
                return f"{self.count}/{multiple if multiple > 1 else ''}{name}"
        return f"{self.count}/{self.period if self.period > 1 else ''}s"


def _unit(word: str) -> int | None:
    """Seconds in a period's name; a word may be plural (``minutes``), a
    letter may not (``ms`` is no period)."""
    if word in _PERIODS:
        return _PERIODS[word]
    return _PERIODS.get(word[:-1]) if len(word) > 2 and word.endswith("s") else None


def _rate(value: Rate | str | None) -> Rate | None:
    return Rate.parse(value) if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class Limit:
    """A concurrency cap and a rate, either or both (neither: no limit)."""

    concurrency: int | None = attrs.field(default=None, validator=_positive_count)
    rate: Rate | None = attrs.field(default=None, converter=_rate,
                                    validator=attrs.validators.optional(attrs.validators.instance_of(Rate)))

    def __bool__(self) -> bool:
        return self.concurrency is not None or self.rate is not None

    def describe(self) -> str:
        parts = [f"concurrency {self.concurrency}"] if self.concurrency is not None else []
        parts += [f"rate {self.rate}"] if self.rate is not None else []
        return ", ".join(parts) or "none"


@attrs.frozen(kw_only=True)
class Limits:
    """What a job type declares: limits for its whole queue and for each of
    its partitions. Operators override either without a deploy (``pmq
    queues limit``)."""

    queue: Limit = attrs.field(factory=Limit, validator=attrs.validators.instance_of(Limit))
    each_partition: Limit = attrs.field(factory=Limit, validator=attrs.validators.instance_of(Limit))

    def describe(self) -> dict[str, str]:
        return {QUEUE: self.queue.describe(), EACH: self.each_partition.describe()}


@attrs.frozen(kw_only=True)
class LimitRow:
    """One stored limit (a row of ``pmq_limits``)."""

    queue: str
    scope: str
    partition: str  # "" unless scope is PARTITION
    origin: str
    limit: Limit

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LimitRow:
        rate = Rate(row["rate"], row["period"]) if row["rate"] is not None else None
        return cls(queue=row["queue_name"], scope=row["scope"], partition=row["partition_key"],
                   origin=row["origin"], limit=Limit(concurrency=row["concurrency"], rate=rate))


def declared_rows(queue: str, limits: Limits | None) -> list[LimitRow]:
    """The rows a job type's declaration stores: none without a
    declaration; for ``Limits()`` (no limit at all), one row without limits,
    which makes the queue flow-controlled: served in turns by partition."""
    if limits is None:
        return []
    rows = [LimitRow(queue=queue, scope=scope, partition="", origin=DECLARED, limit=limit)
            for scope, limit in ((QUEUE, limits.queue), (EACH, limits.each_partition)) if limit]
    return rows or [LimitRow(queue=queue, scope=QUEUE, partition="", origin=DECLARED, limit=Limit())]


def effective(rows: Iterable[LimitRow]) -> dict[tuple[str, str, str], LimitRow]:
    """The limit in force per (queue, scope, partition): an operator's row
    wins over a declared one."""
    chosen: dict[tuple[str, str, str], LimitRow] = {}
    for row in rows:
        key = (row.queue, row.scope, row.partition)
        if key not in chosen or row.origin == OPERATOR:
            chosen[key] = row
    return chosen


@attrs.frozen(kw_only=True)
class QueueLimits:
    """The limits in force on one queue."""

    queue: Limit = Limit()
    each_partition: Limit = Limit()
    partitions: Mapping[str, Limit] = attrs.field(factory=dict)

    def for_partition(self, partition: str | None) -> Limit:
        """The per-partition limit of ``partition`` (None: the default
        partition, which has the per-partition limits like any other)."""
        if partition is not None and partition in self.partitions:
            return self.partitions[partition]
        return self.each_partition

    @property
    def rated(self) -> bool:
        return self.queue.rate is not None or self.each_partition.rate is not None or any(
            limit.rate is not None for limit in self.partitions.values())


def by_queue(rows: Iterable[LimitRow]) -> dict[str, QueueLimits]:
    """The limits in force, per queue that has any row (even one that lifts
    every limit: such a queue is still served fairly by partition)."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in effective(rows).values():
        entry = grouped.setdefault(row.queue, {"partitions": {}})
        if row.scope == PARTITION:
            entry["partitions"][row.partition] = row.limit
        else:
            entry["queue" if row.scope == QUEUE else "each_partition"] = row.limit
    return {queue: QueueLimits(**entry) for queue, entry in grouped.items()}


@attrs.frozen(kw_only=True)
class Usage:
    """What counts against a key's limits now: jobs in flight, and rate
    tickets whose window has not passed."""

    in_flight: int = 0
    tickets: int = 0


def room(limit: Limit, usage: Usage) -> int | None:
    """How many more jobs ``limit`` lets start now (None: no bound)."""
    bounds = []
    if limit.concurrency is not None:
        bounds.append(limit.concurrency - usage.in_flight)
    if limit.rate is not None:
        bounds.append(limit.rate.count - usage.tickets)
    return max(0, min(bounds)) if bounds else None


def ticket_scope(partition: str | None, *, queue_wide: bool = False) -> str:
    """The ``scope_key`` of a rate ticket (see migration 0008)."""
    if queue_wide:
        return "queue"
    return "default" if partition is None else f"p {partition}"


def share(total: int, partitions: int) -> int:
    """Jobs taken from each partition in one pass: the queue's room split
    evenly (at least one), so that every partition gets its turn."""
    return max(1, math.ceil(total / max(1, partitions)))


#: Most messages a flow-controlled queue keeps in Redis. Jobs in Redis are
#: past the fair scheduler: this bounds how many of one partition's jobs
#: can start before another partition's newly due job (the bound that
#: docs/flow-control.md states), at a refill every few milliseconds.
REDIS_SHARE = 50
#: Most partitions with waiting jobs looked at per queue and pass.
MAX_PARTITIONS = 1000


def ticket_scopes(limits: Mapping[str, QueueLimits],
                  partitions: Mapping[str, list[str]]) -> list[tuple[str, str]]:
    """The (queue, ticket scope) pairs whose rate a pass must read."""
    scopes = []
    for queue, queue_limits in limits.items():
        if queue_limits.queue.rate is not None:
            scopes.append((queue, ticket_scope(None, queue_wide=True)))
        for partition in [None, *partitions.get(queue, [])]:
            if queue_limits.for_partition(partition).rate is not None:
                scopes.append((queue, ticket_scope(partition)))
    return scopes


@attrs.frozen(kw_only=True)
class Plan:
    """What one migrator pass may hand over from flow-controlled queues:
    at most ``limit`` from each (queue, partition) of ``picks`` and
    ``budgets[queue]`` in all; ``blocked`` names what a limit holds back
    (a queue mapped to None: the whole queue)."""

    picks: list[tuple[str, str | None, int]]
    budgets: dict[str, int]
    blocked: dict[str, list[str | None] | None]


def plan(limits: Mapping[str, QueueLimits], rooms: Mapping[str, int], partitions: Mapping[str, list[str]],
         in_flight: Mapping[tuple[str, str | None], int], tickets: Mapping[tuple[str, str], int]) -> Plan:
    """The budgets of one pass, from the counts read for it: ``rooms`` (the
    queues' free share in Redis), ``in_flight`` per (queue, partition) and
    ``tickets`` per (queue, ticket scope)."""
    picks: list[tuple[str, str | None, int]] = []
    budgets: dict[str, int] = {}
    blocked: dict[str, list[str | None] | None] = {}
    for queue, queue_limits in limits.items():
        total_in_flight = sum(n for (q, _), n in in_flight.items() if q == queue)
        usage = Usage(in_flight=total_in_flight, tickets=tickets.get((queue, ticket_scope(None, queue_wide=True)), 0))
        allowed = room(queue_limits.queue, usage)
        if allowed == 0:
            blocked[queue] = None
            continue
        budget = min(rooms.get(queue, 0), allowed if allowed is not None else REDIS_SHARE)
        if budget <= 0:
            continue
        candidates: list[str | None] = [None, *partitions.get(queue, [])]
        each = share(budget, len(candidates))
        held: list[str | None] = []
        for partition in candidates:
            usage = Usage(in_flight=in_flight.get((queue, partition), 0),
                          tickets=tickets.get((queue, ticket_scope(partition)), 0))
            partition_room = room(queue_limits.for_partition(partition), usage)
            if partition_room == 0:
                held.append(partition)
                continue
            picks.append((queue, partition, min(each, partition_room if partition_room is not None else each)))
        budgets[queue] = budget
        if held:
            blocked[queue] = held
    return Plan(picks=picks, budgets=budgets, blocked=blocked)


def tickets_for(limits: Mapping[str, QueueLimits], rows: Iterable[Mapping[str, Any]]
                ) -> list[tuple[str, str, Any, int]]:
    """The rate tickets the jobs just handed over take: (queue, scope, job
    id, period), one per rate that applies to the job."""
    tickets = []
    for row in rows:
        queue_limits = limits.get(row["queue_name"])
        if queue_limits is None:
            continue
        if queue_limits.queue.rate is not None:
            tickets.append((row["queue_name"], ticket_scope(None, queue_wide=True), row["id"],
                            queue_limits.queue.rate.period))
        rate = queue_limits.for_partition(row["partition_key"]).rate
        if rate is not None:
            tickets.append((row["queue_name"], ticket_scope(row["partition_key"]), row["id"], rate.period))
    return tickets
