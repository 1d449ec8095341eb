"""pmq in the peer benchmark's harness: the same contract as the peers' modules.

The shared harness (``common.py`` of the peer-bench folder, found through
:mod:`peer_dir`) drives this module exactly as it drives RQ or PgQueuer: it
creates a fresh database (``BENCH_PG_DSN``), flushes Redis db 5, and calls
``setup`` / ``open`` / ``enqueue`` / ``enqueue_bulk`` / ``worker_cmds``.

pmq runs with full durability and its default settings, except where the
environment says otherwise (``PMQ_*`` variables are honoured, e.g.
``PMQ_CONCURRENCY``). Its Redis keys live in the harness's db 5 under their
own prefix, so the harness's flush cleans them up and they never meet the
handler's ``bench:*`` keys.

With ``BENCH_PMQ_METRICS=1`` the pmq-prometheus plugin is loaded beside the
job type and records, as under ``pmq run --metrics`` (see
:mod:`metrics_cost`).

The job type is a plugin registered in code, not through an entry point, and
the worker command runs :func:`pmq_core.runner.run_worker` with it. The
migrator runs as a thread inside worker process 0 (``BENCH_PMQ_MIGRATOR=thread``,
the default) or as a process of its own beside the workers
(``BENCH_PMQ_MIGRATOR=process``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_dir  # noqa: E402

sys.path.insert(0, str(peer_dir.resolve()))
import common  # noqa: E402

from pmq_core import JobType, hookimpl  # noqa: E402
from pmq_core.admin import Admin  # noqa: E402
from pmq_core.client import Client  # noqa: E402
from pmq_core.config import Settings  # noqa: E402
from pmq_core.plugins import Plugins  # noqa: E402

NAME, DIST, BACKEND = "pmq", "pmq", "pg+redis"
QUEUE = "bench"
KEY_PREFIX = "pmqbench:"
HERE = Path(__file__).resolve()


async def job(ctx: Any) -> None:
    """The harness's no-op handler: record that the job started."""
    await common.arecord(**ctx.payload)


class BenchPlugin:
    """The benchmark's one job type, declared as any plugin would."""

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name=QUEUE, handler=job, timeout=60)]


def plugins() -> Plugins:
    if os.environ.get("BENCH_PMQ_METRICS") == "1":
        from pmq_prometheus import plugin as metrics_plugin

        return Plugins(None, [BenchPlugin(), metrics_plugin], entry_points=False)
    return Plugins(None, [BenchPlugin()], entry_points=False)


def settings() -> Settings:
    dsn = os.environ.get("BENCH_PG_DSN")
    if not dsn:
        raise RuntimeError("BENCH_PG_DSN is not set: run this module through the peer harness (common.main)")
    return Settings.load(database_url=dsn, redis_url=common.REDIS_URL,
                         key_prefix=os.environ.get("BENCH_PMQ_KEY_PREFIX", KEY_PREFIX))


def bench_sql() -> dict[str, str]:
    """The named statements of ``prefill.sql``."""
    parts = re.split(r"^-- name: (\w+)\s*$", (HERE.parent / "prefill.sql").read_text(), flags=re.MULTILINE)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def setup() -> None:
    host = plugins()
    with Admin(settings()) as admin:
        admin.upgrade(host)
        admin.register_job_types(host)
        prefill = int(os.environ.get("BENCH_PMQ_PREFILL", "0"))
        if prefill > 0:
            sql = bench_sql()
            admin.conn.execute(sql["prefill_jobs"], {"queue": QUEUE, "count": prefill})
            admin.conn.execute(sql["analyze_jobs"])


def open() -> Client:  # noqa: A001 - the harness's name
    return Client(settings(), plugins=plugins())


def enqueue(client: Client, payload: dict[str, Any]) -> None:
    client.enqueue(QUEUE, payload)


def enqueue_bulk(client: Client, payloads: list[dict[str, Any]]) -> None:
    client.enqueue_many(QUEUE, payloads)


def close(client: Client) -> None:
    client.close()


def migrator_mode() -> str:
    mode = os.environ.get("BENCH_PMQ_MIGRATOR", "thread")
    if mode not in ("thread", "process"):
        raise RuntimeError(f"BENCH_PMQ_MIGRATOR must be 'thread' or 'process', not {mode!r}")
    return mode


def worker_cmds(nproc: int) -> list[list[str]]:
    """``nproc`` worker processes; the migrator is a thread in the first, or
    a process of its own (see the module docstring)."""
    base = [sys.executable, str(HERE)]
    if migrator_mode() == "process":
        return [[*base, "worker"] for _ in range(nproc)] + [[*base, "migrator"]]
    return [[*base, "worker", "--with-migrator"]] + [[*base, "worker"] for _ in range(nproc - 1)]


def worker() -> None:
    from pmq_core.runner import run_worker

    logging.basicConfig(level=logging.WARNING)
    run_worker(settings(), plugins=plugins(), migrator="--with-migrator" in sys.argv)


def migrator() -> None:
    from pmq_core.runner import run_migrator

    logging.basicConfig(level=logging.WARNING)
    run_migrator(settings(), plugins=plugins())


def teardown() -> None:
    """Report the peak resident memory of the largest finished child (a
    worker process) and the CPU seconds the finished children used together
    (start-up included), on a line of their own, before the harness's result
    line. CPU time, unlike a rate, hardly moves when other work shares the
    machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if usage.ru_maxrss:
        print(json.dumps({"pmq_worker_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                          "pmq_workers_cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "migrator":
        migrator()
    else:
        common.main("bench_pmq", pg=True)
