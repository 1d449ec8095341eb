"""SAQ: Redis alone, asyncio worker with the scenario's concurrency (10, SAQ's default)."""

from __future__ import annotations

from typing import Any

import harness
from saq import Queue, Worker

NAME, DIST, BACKEND = "saq", "saq", "redis"
SCENARIOS = {"enqueue", "drain", "latency", "io"}
SETTINGS = f"Worker(concurrency={harness.Config.concurrency})"


async def job(ctx: Any, **payload: Any) -> None:
    await harness.awork()
    await harness.arecord(payload)


async def open() -> Queue:  # noqa: A001 - the harness's name
    queue = Queue.from_url(harness.Config.redis_url, name="bench")
    await queue.connect()
    return queue


async def close(queue: Queue) -> None:
    await queue.disconnect()


async def enqueue(queue: Queue, payload: dict[str, Any], priority: str) -> None:
    await queue.enqueue("job", **payload)


async def worker() -> None:
    queue = Queue.from_url(harness.Config.redis_url, name="bench")
    await Worker(queue, functions=[job], concurrency=harness.Config.concurrency).start()
