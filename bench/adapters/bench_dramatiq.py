"""Dramatiq: Redis alone, sync actors, the ``dramatiq`` command with one
process per worker process of the scenario and 8 threads each (its default),
or the scenario's concurrency when it sets one above 10."""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
import harness
from dramatiq.brokers.redis import RedisBroker

NAME, DIST, BACKEND = "dramatiq", "dramatiq", "redis"
#: Its handlers are plain functions: its drain is the sync scenario's comparison.
SYNC_HANDLERS = True
SCENARIOS = {"enqueue", "drain", "latency", "io"}
THREADS = harness.Config.concurrency if harness.Config.concurrency > 10 else 8
SETTINGS = f"dramatiq --processes N --threads {THREADS}"

dramatiq.set_broker(RedisBroker(url=harness.Config.redis_url))


@dramatiq.actor(queue_name="bench")
def job(**payload: Any) -> None:
    harness.work()
    harness.record(payload)


def open() -> None:  # noqa: A001 - the harness's name
    return None


def enqueue(_: None, payload: dict[str, Any], priority: str) -> None:
    job.send(**payload)


def worker_cmds(procs: int) -> list[list[str]]:
    return [[sys.executable, "-m", "dramatiq", "bench_dramatiq", "--processes", str(procs),
             "--threads", str(THREADS)]]
