"""PgQueuer: PostgreSQL alone (asyncpg), LISTEN/NOTIFY, ``QueueManager.run``
dequeuing batches of 10 with no bound on concurrency unless a scenario sets
one (``max_concurrent_tasks``). Higher priority runs sooner."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import asyncpg
import harness
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries

NAME, DIST, BACKEND = "pgqueuer", "pgqueuer", "pg"
SCENARIOS = {"enqueue", "bulk", "drain", "latency", "io", "priority"}
PRIORITIES = {"high": 10, "normal": 0, "low": 0}
ENTRYPOINT = "bench"
BATCH = 10
SETTINGS = (f"QueueManager.run(batch_size={BATCH}"
            + (f", max_concurrent_tasks={harness.Config.concurrency})" if harness.Config.sleep else ")"))


def setup() -> None:
    async def install() -> None:
        conn = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
        await Queries.from_asyncpg_connection(conn).install()
        await conn.close()

    asyncio.run(install())


async def open() -> tuple[Any, Queries]:  # noqa: A001 - the harness's name
    conn = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    return conn, Queries.from_asyncpg_connection(conn)


async def close(state: tuple[Any, Queries]) -> None:
    await state[0].close()


async def enqueue(state: tuple[Any, Queries], payload: dict[str, Any], priority: str) -> None:
    await state[1].enqueue(ENTRYPOINT, json.dumps(payload).encode(), PRIORITIES[priority])


async def enqueue_bulk(state: tuple[Any, Queries], payloads: list[dict[str, Any]], priority: str,
                       queue: int) -> None:
    await state[1].enqueue([ENTRYPOINT] * len(payloads), [json.dumps(p).encode() for p in payloads],
                           [PRIORITIES[priority]] * len(payloads))


async def worker() -> None:
    conn = await asyncpg.connect(os.environ["BENCH_PG_DSN"])
    manager = QueueManager(Queries.from_asyncpg_connection(conn))

    @manager.entrypoint(ENTRYPOINT)
    async def job(j: Any) -> None:
        await harness.awork()
        await harness.arecord(json.loads(j.payload))

    limit = harness.Config.concurrency if harness.Config.sleep else None
    await manager.run(batch_size=BATCH, max_concurrent_tasks=limit)
