"""The Redis side of pmq: handing jobs to workers, mirroring their status,
and the dead-letter lists.

Redis holds nothing PostgreSQL does not: losing it loses no job, only time
(the migrator notices and hands the jobs over again). Every write is one
call of a Lua script (``lua/*.lua``) per queue in a batch of jobs: a script
takes the keys of one queue only, all in that queue's hash slot, so that it
runs on a Redis Cluster as on a single Redis. This module binds the scripts
and builds their calls; the key names and the message format are in
:mod:`pmq_core.keys`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any, TypeVar

import attrs
import redis

from pmq_core.jobtypes import band_of
from pmq_core.keys import BANDS, FINISHED_JOB_TTL, Keys, message, parse_message

#: Where the Lua scripts are, in the package: one file per script, whose
#: header names its KEYS and ARGV.
LUA_DIR = "lua"

T = TypeVar("T")
#: The KEYS and ARGV of one script call.
Call = tuple[list[str], list[Any]]


@cache
def lua_source(name: str) -> str:
    """The text of the script ``name`` (``lua/<name>.lua``), shipped as
    package data like the SQL."""
    return resources.files("pmq_core").joinpath(LUA_DIR, f"{name}.lua").read_text(encoding="utf-8")


@attrs.frozen
class Scripts:
    """pmq's Lua scripts bound to one Redis client (sync or asyncio: calling
    one returns the result, or an awaitable of it). Each field is named
    after its file in ``lua/``.

    Each script does for a batch of jobs, in one command, what would
    otherwise be one or more commands per job: the client-side cost of a
    command (packing it, parsing its reply) was most of pmq's Redis time.
    """

    push: Any
    mark: Any
    dead_push: Any
    dead_remove: Any

    @classmethod
    def on(cls, client: Any) -> Scripts:
        return cls(**{field.name: client.register_script(lua_source(field.name)) for field in attrs.fields(cls)})


@attrs.frozen
class Mark:
    """A status-hash update for one job."""

    job_id: Any
    queue: str
    status: str
    attempt: int | None = None
    worker: str | None = None
    error: str | None = None


def by_queue(items: Iterable[T], queue_of: Callable[[T], str]) -> list[list[T]]:
    """``items`` split by queue, each queue's in their given order: the
    hash-slot rule (see :mod:`pmq_core.keys`) allows one script call per
    queue, never one across queues."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(queue_of(item), []).append(item)
    return list(groups.values())


def push_calls(keys: Keys, rows: Iterable[dict[str, Any]]) -> list[Call]:
    """The calls of ``push.lua``, one per queue: ``rows`` (id, queue_name,
    priority, attempt_count, created_at) in priority order within each band;
    the jobs' status hashes only where the deployment keeps them."""
    now = time.time()
    calls: list[Call] = []
    for group in by_queue(sorted(rows, key=lambda r: (r["priority"], r["created_at"])), lambda r: r["queue_name"]):
        script_keys: list[str] = []
        args: list[Any] = [now, 2 if keys.status_hashes else 1]
        for row in group:
            job_id, queue = str(row["id"]), row["queue_name"]
            script_keys.append(keys.band(queue, band_of(row["priority"])))
            if keys.status_hashes:
                script_keys.append(keys.job(queue, job_id))
            args += (message(job_id, row["attempt_count"]), queue, row["priority"], row["attempt_count"])
        calls.append((script_keys, args))
    return calls


def mark_calls(keys: Keys, marks: Iterable[Mark]) -> list[Call]:
    """The calls of ``mark.lua``, one per queue; none where the deployment
    keeps no status hashes."""
    if not keys.status_hashes:
        return []
    now = time.time()
    calls: list[Call] = []
    for group in by_queue(marks, lambda mark: mark.queue):
        script_keys: list[str] = []
        args: list[Any] = [now, FINISHED_JOB_TTL]
        for mark in group:
            script_keys.append(keys.job(mark.queue, mark.job_id))
            args += (mark.status, "" if mark.attempt is None else mark.attempt, mark.worker or "", mark.error or "")
        calls.append((script_keys, args))
    return calls


def dead_calls(keys: Keys, jobs: Iterable[tuple[str, uuid.UUID | str]]) -> list[Call]:
    """The calls of ``dead_push.lua`` and ``dead_remove.lua``, one per
    queue: ``jobs`` are (queue, job id) pairs. These two scripts are the
    only writers of the dead-letter lists."""
    return [([keys.dead(queue) for queue, _id in group], [str(job_id) for _queue, job_id in group])
            for group in by_queue(jobs, lambda job: job[0])]


def queued_message_ids(client: redis.Redis, keys: Keys, queues: Iterable[str]) -> set[str]:
    """The ids of every job whose message waits in Redis for these queues.

    Used only on jobs suspected lost, over lists kept short by the
    migrator's depth limit, so reading them whole is cheap.
    """
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in keys.bands(queue):
            pipe.lrange(key, 0, -1)
    return {str(parsed[0]) for items in pipe.execute() for parsed in map(parse_message, items) if parsed is not None}


def band_depths(client: redis.Redis, keys: Keys, queues: list[str]) -> dict[str, dict[str, int]]:
    """The length of each band of each queue."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in keys.bands(queue):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {queue: {band: next(lengths) for band in BANDS} for queue in queues}
