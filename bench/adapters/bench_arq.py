"""arq: Redis alone, asyncio worker with ``max_jobs`` the scenario's
concurrency (10) and arq's default poll delay (0.5 s)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import harness
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker

NAME, DIST, BACKEND = "arq", "arq", "redis"
SCENARIOS = {"enqueue", "drain", "latency", "io"}
SETTINGS = f"Worker(max_jobs={harness.Config.concurrency})"
_url = urlparse(harness.Config.redis_url)
REDIS = RedisSettings(host=_url.hostname or "127.0.0.1", port=_url.port or 6379,
                      database=int(_url.path.strip("/") or 0))


async def job(ctx: Any, **payload: Any) -> None:
    await harness.awork()
    await harness.arecord(payload)


async def open() -> ArqRedis:  # noqa: A001 - the harness's name
    return await create_pool(REDIS)


async def close(pool: ArqRedis) -> None:
    await pool.aclose()


async def enqueue(pool: ArqRedis, payload: dict[str, Any], priority: str) -> None:
    await pool.enqueue_job("job", **payload)


def worker() -> None:
    Worker(functions=[job], redis_settings=REDIS, max_jobs=harness.Config.concurrency).run()
