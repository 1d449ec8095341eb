"""RQ: Redis alone, sync jobs, the default ``Worker`` (a forked work-horse
per job, as RQ runs by default), one per worker process of the scenario."""

from __future__ import annotations

from typing import Any

import harness
import redis
from rq import Queue, Worker

NAME, DIST, BACKEND = "rq", "rq", "redis"
#: Its handlers are plain functions: its drain is the sync scenario's comparison.
SYNC_HANDLERS = True
SCENARIOS = {"enqueue", "bulk", "drain", "latency"}
SETTINGS = "Worker (fork per job)"
FUNC = "bench_rq.job"


def job(**payload: Any) -> None:
    harness.work()
    harness.record(payload)


def open() -> Queue:  # noqa: A001 - the harness's name
    return Queue("bench", connection=redis.Redis.from_url(harness.Config.redis_url))


def enqueue(queue: Queue, payload: dict[str, Any], priority: str) -> None:
    queue.enqueue(FUNC, kwargs=payload)


def enqueue_bulk(queue: Queue, payloads: list[dict[str, Any]], priority: str, index: int) -> None:
    queue.enqueue_many([Queue.prepare_data(FUNC, kwargs=p) for p in payloads])


def worker() -> None:
    conn = redis.Redis.from_url(harness.Config.redis_url)
    Worker([Queue("bench", connection=conn)], connection=conn).work(logging_level="WARNING")
