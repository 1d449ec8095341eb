"""One "host" of the partition test, run inside its network namespace:
``python -m tests.scale.partition_host worker|migrator``, settings from the
PMQ_* environment.

Job type ``nap`` sleeps ``seconds`` and appends its run to the file
PARTITION_RUNS (a file, not the network: it reports even from a cut-off
host). On the host named PARTITION_CUT, a run that overlapped the
partition (the window written to PARTITION_WINDOW by the test) fails: its
outcome is the stale one that must never be recorded over the job's new
attempt elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pmq_core import Fail, JobType, hookimpl
from pmq_core.config import Settings
from pmq_core.plugins import Plugins
from pmq_core.runner import run_migrator, run_worker

QUEUE = "nap"


def overlapped_partition(started: float, ended: float) -> bool:
    window = Path(os.environ["PARTITION_WINDOW"])
    marks = dict(line.split() for line in window.read_text().splitlines()) if window.exists() else {}
    if "cut" not in marks:
        return False
    return ended > float(marks["cut"]) and started < float(marks.get("healed", "inf"))


class Nap:
    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name=QUEUE, handler=self.nap, timeout=60)]

    async def nap(self, job: Any) -> None:
        host = os.environ["PARTITION_HOST"]
        started = time.time()
        await asyncio.sleep(job.payload.get("seconds", 0))
        ended = time.time()
        with open(os.environ["PARTITION_RUNS"], "a") as runs:
            runs.write(f"{job.id} {job.attempt} {host} {started!r} {ended!r}\n")
        if host == os.environ["PARTITION_CUT"] and overlapped_partition(started, ended):
            raise Fail(f"stale outcome from {host}, cut off while this run went on")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {os.environ['PARTITION_HOST']} %(message)s")
    settings = Settings.load()
    plugins = Plugins(None, [Nap()], entry_points=False)
    if sys.argv[1] == "migrator":
        run_migrator(settings, plugins)
    else:
        run_worker(settings, plugins=plugins, concurrency=10)


if __name__ == "__main__":
    main()
