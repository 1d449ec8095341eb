"""pmq in the benchmark, as an application would run it.

The job types are a plugin registered in code (no entry point), the producer
is :class:`pmq_core.Client`, the worker :func:`pmq_core.runner.run_worker`.
Settings are pmq's defaults (full durability, hand-over at enqueue, prefetch
sized by the worker) except the concurrency the scenario asks for; ``PMQ_*``
environment variables are honoured. Keys live under their own prefix in the
run's Redis db.

The migrator runs as a thread inside worker process 0
(``BENCH_PMQ_MIGRATOR=thread``, the default: on 2 cores a third process only
adds scheduling) or as a process of its own (``=process``).
``BENCH_PMQ_PREFILL`` puts that many finished jobs in the table first
(``bench/scaling.py``). Two variants measure what a feature costs the
drain (``bench/variants.py``): ``BENCH_PMQ_METRICS=1`` loads pmq-prometheus
beside the job types, recording as under ``pmq run --metrics``;
``BENCH_PMQ_LIMITED_NEIGHBOUR=1`` declares one more queue with a
concurrency cap, so that the migrator's every pass takes the flow-control
path beside the unlimited queue the drain measures.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import harness

from pmq_core import JobType, Limit, Limits, hookimpl
from pmq_core.admin import Admin
from pmq_core.client import Client
from pmq_core.config import Settings
from pmq_core.plugins import Plugins

NAME, DIST, BACKEND = "pmq", "pmq", "pg+redis"
SCENARIOS = {"enqueue", "bulk", "drain", "latency", "sync", "queues", "io", "priority"}
#: Priorities of the priority scenario's bands (lower runs sooner; high ≤ 50, low > 150).
PRIORITIES = {"high": 10, "normal": None, "low": 200}
MIGRATOR = os.environ.get("BENCH_PMQ_MIGRATOR", "thread")
SETTINGS = (f"concurrency {harness.Config.concurrency}, {harness.Config.handler} handler, "
            f"migrator as a {MIGRATOR}, defaults otherwise")
HERE = Path(__file__).resolve()


async def async_job(ctx: Any) -> None:
    await harness.awork()
    await harness.arecord(ctx.payload)


def sync_job(ctx: Any) -> None:
    harness.work()
    harness.record(ctx.payload)


def queue_name(index: int) -> str:
    return "bench" if index == 0 else f"bench{index}"


class BenchPlugin:
    """The benchmark's job types, one per queue, declared as any plugin would."""

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        handler = sync_job if harness.Config.handler == "sync" else async_job
        job_types = [JobType(name=queue_name(i), handler=handler, timeout=60) for i in range(harness.Config.queues)]
        if os.environ.get("BENCH_PMQ_LIMITED_NEIGHBOUR") == "1":
            job_types.append(JobType(name="bench-limited", handler=handler, limits=Limits(queue=Limit(concurrency=5))))
        return job_types


def plugins() -> Plugins:
    if os.environ.get("BENCH_PMQ_METRICS") == "1":
        from pmq_prometheus import plugin as metrics_plugin

        return Plugins(None, [BenchPlugin(), metrics_plugin], entry_points=False)
    return Plugins(None, [BenchPlugin()], entry_points=False)


def settings() -> Settings:
    return Settings.load(database_url=os.environ["BENCH_PG_DSN"], redis_url=harness.Config.redis_url,
                         key_prefix=os.environ.get("BENCH_PMQ_KEY_PREFIX", "pmqbench:"))


def prefill_sql() -> dict[str, str]:
    """The named statements of ``prefill.sql``."""
    text = (HERE.parent.parent / "prefill.sql").read_text()
    parts = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def setup() -> None:
    host = plugins()
    with Admin(settings()) as admin:
        admin.upgrade(host)
        admin.register_job_types(host)
        prefill = int(os.environ.get("BENCH_PMQ_PREFILL", "0"))
        if prefill > 0:
            sql = prefill_sql()
            admin.conn.execute(sql["prefill_jobs"], {"queue": queue_name(0), "count": prefill})
            admin.conn.execute(sql["analyze_jobs"])


def open() -> Client:  # noqa: A001 - the harness's name
    return Client(settings(), plugins=plugins())


def enqueue(client: Client, payload: dict[str, Any], priority: str) -> None:
    client.enqueue(queue_name(0), payload, priority=PRIORITIES[priority])


def enqueue_bulk(client: Client, payloads: list[dict[str, Any]], priority: str, queue: int) -> None:
    client.enqueue_many(queue_name(queue), payloads, priority=PRIORITIES[priority])


def close(client: Client) -> None:
    client.close()


def worker_cmds(procs: int) -> list[list[str]]:
    base = [sys.executable, str(HERE)]
    if MIGRATOR == "process":
        return [[*base, "worker"] for _ in range(procs)] + [[*base, "migrator"]]
    return [[*base, "worker", "--with-migrator"]] + [[*base, "worker"] for _ in range(procs - 1)]


def main() -> None:
    from pmq_core.runner import run_migrator, run_worker

    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1] == "migrator":
        run_migrator(settings(), plugins=plugins())
    else:
        run_worker(settings(), plugins=plugins(), concurrency=harness.Config.concurrency,
                   migrator="--with-migrator" in sys.argv)


if __name__ == "__main__":
    main()
