"""Does a pmq worker's memory stay flat over many jobs?

One worker process (with the migrator as a thread, as in the drain
scenario) is fed jobs in bulk for a fixed time or job count, never more than
a bounded backlog ahead of it, while its resident memory is sampled from
``/proc/<pid>/status``. The result is one JSON line: jobs run, the samples,
and the slope of resident memory against jobs run after the warm-up (the
first fifth of the jobs), in MB per 100,000 jobs. Flat means a slope near 0.

Usage::

    python bench/memory.py --seconds 600            # as many jobs as fit in 10 minutes
    python bench/memory.py --jobs 1000000

Uses the benchmark's harness (a fresh database, its Redis db flushed before
and after: ``BENCH_PG_ADMIN`` and ``BENCH_REDIS_URL`` as for ``run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHUNK = 5_000
BACKLOG = 20_000
SAMPLE_EVERY = 2.0


def slope_mb_per_100k(samples: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of VmRSS against jobs done, after the warm-up."""
    if not samples:
        return None
    warm = samples[-1]["jobs"] / 5
    points = [(s["jobs"], s["rss_kb"] / 1024) for s in samples if s["jobs"] >= warm]
    if len(points) < 3:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var * 100_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300.0, help="stop after this long (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=1_000_000, help="stop after this many jobs (default: %(default)s)")
    args = ap.parse_args()
    os.environ["BENCH_N"] = str(args.jobs)  # the handler marks the last job of this many
    import costs
    import harness

    bench_pmq = harness.load("pmq")
    harness.flush_redis()
    harness.pg_create("pmq_memory")
    procs: list[Any] = []
    try:
        bench_pmq.setup()
        client = bench_pmq.open()
        procs = harness.spawn(bench_pmq.worker_cmds(1))
        pid = procs[0].pid
        r = harness.redis_client()
        enqueued = 0
        samples: list[dict[str, Any]] = []
        started = time.monotonic()
        next_sample = started
        while True:
            done = int(r.get(harness.CNT) or 0)
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - started, 1), "jobs": done, "rss_kb": costs.rss_kb(pid)["VmRSS"]})
                next_sample = now + SAMPLE_EVERY
            if done >= args.jobs or now - started >= args.seconds:
                break
            if enqueued < args.jobs and enqueued - done < BACKLOG:
                count = min(CHUNK, args.jobs - enqueued)
                bench_pmq.enqueue_bulk(client, [{"n": enqueued + i} for i in range(count)], "normal", 0)
                enqueued += count
            else:
                time.sleep(0.2)
        peak = costs.rss_kb(pid)
        bench_pmq.close(client)
    finally:
        harness.stop(procs)
        harness.pg_drop()
        harness.flush_redis()
    elapsed = time.monotonic() - started
    print(json.dumps({
        "jobs": samples[-1]["jobs"], "seconds": round(elapsed, 1), "rate": round(samples[-1]["jobs"] / elapsed, 1),
        "rss_first_mb": round(samples[0]["rss_kb"] / 1024, 1), "rss_last_mb": round(samples[-1]["rss_kb"] / 1024, 1),
        "peak_rss_mb": round(peak["VmHWM"] / 1024, 1), "slope_mb_per_100k_jobs": slope_mb_per_100k(samples),
        "samples": samples,
    }))


if __name__ == "__main__":
    main()
