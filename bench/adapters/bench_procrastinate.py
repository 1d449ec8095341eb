"""Procrastinate: PostgreSQL alone (psycopg 3, async), LISTEN/NOTIFY, one
worker per process with the scenario's concurrency (10 by default). Higher
priority runs sooner."""

from __future__ import annotations

import os
from typing import Any

import harness
import procrastinate

NAME, DIST, BACKEND = "procrastinate", "procrastinate", "pg"
SCENARIOS = {"enqueue", "bulk", "drain", "latency", "io", "priority"}
PRIORITIES = {"high": 10, "normal": 0, "low": 0}
SETTINGS = f"run_worker_async(concurrency={harness.Config.concurrency}), listen_notify on"

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_PG_DSN", "")))


@app.task(name="bench.job", queue="bench")
async def job(**payload: Any) -> None:
    await harness.awork()
    await harness.arecord(payload)


def setup() -> None:
    with app.open():
        app.schema_manager.apply_schema()


async def open() -> procrastinate.App:  # noqa: A001 - the harness's name
    await app.open_async()
    return app


async def close(opened: procrastinate.App) -> None:
    await opened.close_async()


async def enqueue(_: procrastinate.App, payload: dict[str, Any], priority: str) -> None:
    await job.configure(priority=PRIORITIES[priority]).defer_async(**payload)


async def enqueue_bulk(_: procrastinate.App, payloads: list[dict[str, Any]], priority: str, queue: int) -> None:
    await job.configure(priority=PRIORITIES[priority]).batch_defer_async(*payloads)


async def worker() -> None:
    async with app.open_async():
        await app.run_worker_async(queues=["bench"], concurrency=harness.Config.concurrency)
