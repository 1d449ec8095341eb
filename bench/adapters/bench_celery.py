"""Celery: Redis as broker, no result backend, sync tasks, the prefork pool
with one child per worker process of the scenario."""

from __future__ import annotations

import sys
from typing import Any

import harness
from celery import Celery

NAME, DIST, BACKEND = "celery", "celery", "redis"
#: Its handlers are plain functions: its drain is the sync scenario's comparison.
SYNC_HANDLERS = True
SCENARIOS = {"enqueue", "drain", "latency"}
SETTINGS = "celery worker -P prefork -c N, task_ignore_result"

app = Celery("bench_celery", broker=harness.Config.redis_url)
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True, task_default_queue="bench")


@app.task(name="bench.job")
def job(**payload: Any) -> None:
    harness.work()
    harness.record(payload)


def open() -> None:  # noqa: A001 - the harness's name
    return None


def enqueue(_: None, payload: dict[str, Any], priority: str) -> None:
    job.delay(**payload)


def worker_cmds(procs: int) -> list[list[str]]:
    return [[sys.executable, "-m", "celery", "-A", "bench_celery", "worker", "-P", "prefork", "-c", str(procs),
             "-Q", "bench", "-l", "WARNING"]]
