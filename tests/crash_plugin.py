"""A job type whose culprit jobs kill the process that runs them, and a
worker process for it (``python -m tests.crash_plugin``, settings from the
PMQ_* environment) that the tests restart whenever it dies.

Each run of a job inserts a row into ``crash_runs`` when it starts and
stamps its end, so that the tests can see every attempt, in which process it
ran, and whether two ever overlapped.
"""

from __future__ import annotations

import builtins
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import psycopg

from pmq_core import Fail, JobType, RetryPolicy, hookimpl
from pmq_core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "crashy"
RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS crash_runs (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  uuid        NOT NULL,
    attempt integer     NOT NULL,
    pid     integer     NOT NULL,
    started timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended   timestamptz
)"""
POLICY = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)


class CrashPlugin:
    """Job type ``crashy``: payload ``sleep`` (seconds), ``crash`` (the
    handler ends its process with ``os._exit(1)``). Picklable, so that a
    worker's isolation child can load it too."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def run(self, job: Any) -> str:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            row = conn.execute("INSERT INTO crash_runs (job_id, attempt, pid) VALUES (%s, %s, %s) RETURNING id",
                               (job.id, job.attempt, os.getpid())).fetchone()
            assert row is not None
            if job.payload.get("crash"):
                os._exit(1)
            time.sleep(job.payload.get("sleep", 0))
            conn.execute("UPDATE crash_runs SET ended = clock_timestamp() WHERE id = %s", (row[0],))
        return f"ran in {os.getpid()}"

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name=QUEUE, handler=self.run, retry=POLICY, timeout=30)]


_STARTED_FOR: list[Any] = []  # the worker ids pmq_worker_started was called with, in this process


class Probe:
    """Job types ``probe`` (sync) and ``aprobe`` (async) for the isolation
    runner's tests, each doing what its payload says: ``crash`` (exit with
    that code), ``raise`` (the name of a builtin exception, or "Fail"),
    ``sleep`` (seconds), ``until`` (a file's path: wait up to 30 s for it
    to exist), ``unpicklable`` (return a lambda), else return its process
    id and whether ``pmq_worker_started`` ran there."""

    @staticmethod
    def _act(job: Any) -> Any:
        payload = job.payload
        if "until" in payload:
            deadline = time.monotonic() + 30
            while not Path(payload["until"]).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        if "crash" in payload:
            os._exit(payload["crash"])
        if "raise" in payload:
            error = Fail if payload["raise"] == "Fail" else getattr(builtins, payload["raise"])
            raise error("raised on purpose")
        time.sleep(payload.get("sleep", 0))
        if payload.get("unpicklable"):
            return lambda: None
        return {"pid": os.getpid(), "started_for": [str(w) for w in _STARTED_FOR], "attempt": job.attempt}

    def probe(self, job: Any) -> Any:
        return self._act(job)

    async def aprobe(self, job: Any) -> Any:
        return self._act(job)

    @hookimpl
    def pmq_worker_started(self, worker_id: Any) -> None:
        _STARTED_FOR.append(worker_id)

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="probe", handler=self.probe, retry=POLICY, timeout=30),
                JobType(name="aprobe", handler=self.aprobe, retry=POLICY, timeout=30)]


def start_worker_process(settings: Settings, log: IO[Any], concurrency: int, prefetch: int) -> subprocess.Popen[bytes]:
    """This module's worker in a new process, with ``settings`` passed
    through the environment and its log written to ``log``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PMQ_")}
    env.update({
        "PYTHONPATH": str(ROOT), "PMQ_DATABASE_URL": settings.database_url or "",
        "PMQ_REDIS_URL": settings.redis_url or "", "PMQ_KEY_PREFIX": settings.key_prefix,
        "PMQ_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval), "PMQ_RESCUE_AFTER": str(settings.rescue_after),
        "PMQ_CONCURRENCY": str(concurrency), "PMQ_PREFETCH": str(prefetch),
    })
    return subprocess.Popen([sys.executable, "-m", "tests.crash_plugin"], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def main() -> None:
    from pmq_core.plugins import Plugins
    from pmq_core.runner import run_worker
    from tests.crash_plugin import CrashPlugin as Plugin  # by its module's name, so the child can unpickle it

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    settings = Settings.load()
    assert settings.database_url
    run_worker(settings, plugins=Plugins(None, [Plugin(settings.database_url)], entry_points=False))


if __name__ == "__main__":
    main()
