"""The job types the crash-recovery and chaos tests run, and a worker process
for them (``python -m tests.chaos.workload``, settings from the PMQ_*
environment) that the tests SIGKILL.

Each successful run of a ``chaos`` job inserts one row into ``chaos_runs``
before the worker records the outcome, so a job run twice (at-least-once
delivery after a crash) shows as two rows. A ``chaos-stubborn`` job's sync
handler ignores ``job.cancelled`` and outlives its timeout on its first
attempt; each run that ends records its start and end in ``chaos_spans``, so
that two runs of one job that overlapped show. A ``chaos-crash`` job ends
the process that runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from pmq_core import Fail, JobType, RetryPolicy, hookimpl
from pmq_core.config import Settings
from pmq_core.plugins import Plugins

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "chaos"
STUBBORN = "chaos-stubborn"
CRASH = "chaos-crash"
RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS chaos_runs (
    job_id uuid        NOT NULL,
    attempt integer    NOT NULL,
    pid    integer     NOT NULL,
    at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS chaos_spans (
    job_id   uuid    NOT NULL,
    attempt  integer NOT NULL,
    pid      integer NOT NULL,
    started  float8  NOT NULL,
    ended    float8  NOT NULL
)"""
#: A stubborn handler's first run sleeps this long, past its timeout, and
#: ignores ``job.cancelled``.
STUBBORN_SLEEP, STUBBORN_TIMEOUT = 1.0, 0.3
#: Payloads a plain-SQL producer can store that Python cannot decode (a
#: 5,000-digit integer, nesting 3,000 deep): such jobs must end dead ("the
#: stored payload cannot be read") and cost no other job anything.
POISON_PAYLOADS = ('{"n": ' + "7" * 5000 + "}", '{"deep": ' + "[" * 3000 + "]" * 3000 + "}")
#: run_at values no migrator could read back: the schema refuses the row.
REFUSED_RUN_ATS = ("infinity", "10000-01-01 00:00+00", "0044-03-15 BC")
#: Attempts are spent by crashes and server restarts as well as by handlers:
#: generous, so that only the jobs designed to die end dead.
POLICY = RetryPolicy(max_attempts=100, base_delay=0.02, max_delay=0.5)


class Workload:
    """Job type ``chaos``: payload ``sleep`` (seconds, on the first attempt
    only unless ``every_attempt``), ``die`` (fail at once)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pools: dict[int, AsyncConnectionPool] = {}

    def __getstate__(self) -> dict[str, Any]:
        """What a worker's isolation child gets: the URL, not this process's pools."""
        return {"database_url": self.database_url, "_pools": {}}

    async def _pool(self) -> AsyncConnectionPool:
        loop = id(asyncio.get_running_loop())
        pool = self._pools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(self.database_url, min_size=1, max_size=4, open=False, timeout=5,
                                       kwargs={"autocommit": True})
            await pool.open()
            self._pools[loop] = pool
        return pool

    async def run(self, job: Any) -> None:
        seconds = job.payload.get("sleep", 0)
        if seconds and (job.attempt == 1 or job.payload.get("every_attempt")):
            await asyncio.sleep(seconds)
        if job.payload.get("die"):
            raise Fail("designed to die")
        pool = await self._pool()
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO chaos_runs (job_id, attempt, pid) VALUES (%s, %s, %s)",
                               (job.id, job.attempt, os.getpid()))

    def stubborn(self, job: Any) -> None:
        """Sync, deaf to ``job.cancelled``: its first run outlives its timeout."""
        started = time.time()
        if job.attempt == 1:
            time.sleep(STUBBORN_SLEEP)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO chaos_spans (job_id, attempt, pid, started, ended) VALUES (%s, %s, %s, %s, %s)",
                         (job.id, job.attempt, os.getpid(), started, time.time()))

    def crash(self, job: Any) -> None:
        """Ends the process that runs it: a worker at first, then, once the
        job is a suspect, its worker's isolation child."""
        os._exit(3)

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name=QUEUE, handler=self.run, retry=POLICY, timeout=30),
                JobType(name=STUBBORN, handler=self.stubborn, timeout=STUBBORN_TIMEOUT,
                        retry=RetryPolicy(max_attempts=20, base_delay=0.02, max_delay=0.2)),
                JobType(name=CRASH, handler=self.crash, retry=RetryPolicy(max_attempts=3, base_delay=0.02))]


def plugins(database_url: str) -> Plugins:
    return Plugins(None, [Workload(database_url)], entry_points=False)


def start_worker_process(settings: Settings, log: IO[Any], concurrency: int = 20) -> subprocess.Popen[bytes]:
    """This module's worker in a new process, with ``settings`` passed through
    the environment and its log written to ``log``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PMQ_")}
    env.update({
        "PYTHONPATH": str(ROOT), "CHAOS_CONCURRENCY": str(concurrency),
        "PMQ_DATABASE_URL": settings.database_url or "", "PMQ_REDIS_URL": settings.redis_url or "",
        "PMQ_KEY_PREFIX": settings.key_prefix, "PMQ_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval),
        "PMQ_RESCUE_AFTER": str(settings.rescue_after), "PMQ_SHUTDOWN_GRACE": str(settings.shutdown_grace),
    })
    return subprocess.Popen([sys.executable, "-m", "tests.chaos.workload"], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def main() -> None:
    from pmq_core.runner import run_worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    settings = Settings.load()
    assert settings.database_url
    run_worker(settings, plugins=plugins(settings.database_url),
               concurrency=int(os.environ.get("CHAOS_CONCURRENCY", "20")))


if __name__ == "__main__":
    main()
