"""Job types for the flow-control tests, and a worker process serving them.

Handlers do nothing but take a little time: what the tests read is the
attempts' start and end times that workers record in ``job_logs`` (the
handler's own run), across every worker process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from pmq_core import JobType, RetryPolicy, Settings, hookimpl
from pmq_core.flow import Limit, Limits

ROOT = Path(__file__).resolve().parent.parent

#: Declared limits: a cap on the whole queue, and a rate on the whole queue.
CAPPED = Limits(queue=Limit(concurrency=5))
RATED = Limits(queue=Limit(rate="50/s"))


async def short(job: Any) -> None:
    await asyncio.sleep(0.05)


async def noop(job: Any) -> None:
    return None


async def held_open(job: Any) -> None:
    """Runs while the file its payload names exists (at most a minute)."""
    hold = job.payload.get("hold")
    for _ in range(1200):
        if not hold or not os.path.exists(hold):
            return
        await asyncio.sleep(0.05)


async def report_partition(job: Any) -> None:
    """Fails for good, naming the partition it saw: the test reads the error."""
    raise RuntimeError(f"partition={job.partition!r}")


class FlowPlugin:
    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [
            JobType(name="capped", handler=short, limits=CAPPED),
            JobType(name="rated", handler=noop, limits=RATED),
            JobType(name="fair", handler=noop, limits=Limits(), partition=lambda payload: payload.get("tenant")),
            JobType(name="plain", handler=held_open),
            JobType(name="partitioned", handler=report_partition, retry=RetryPolicy(max_attempts=1)),
        ]


def start_worker_process(settings: Settings, log: IO[Any], concurrency: int,
                         migrator: bool = False) -> subprocess.Popen[bytes]:
    """A worker (and a migrator, if asked) serving this module's job types
    in a new process, with ``settings`` passed through the environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PMQ_")}
    env.update({
        "PYTHONPATH": str(ROOT), "PMQ_DATABASE_URL": settings.database_url or "",
        "PMQ_REDIS_URL": settings.redis_url or "", "PMQ_KEY_PREFIX": settings.key_prefix,
        "PMQ_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval), "PMQ_RESCUE_AFTER": str(settings.rescue_after),
        "PMQ_CONCURRENCY": str(concurrency), "PMQ_PREFETCH": "0", "FLOW_MIGRATOR": "1" if migrator else "",
    })
    return subprocess.Popen([sys.executable, "-m", "tests.flow_plugin"], env=env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def main() -> None:
    from pmq_core.plugins import Plugins
    from pmq_core.runner import run_worker
    from tests.flow_plugin import FlowPlugin  # by its module's name, so an isolation child can unpickle it

    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    run_worker(Settings.load(), plugins=Plugins(None, [FlowPlugin()], entry_points=False),
               migrator=bool(os.environ.get("FLOW_MIGRATOR")))


if __name__ == "__main__":
    main()
