"""What pmq-prometheus costs a worker: the drain scenario with metrics off
and on, interleaved in one run.

"On" is what ``pmq run --metrics`` sets up in every worker process: the
plugin loaded, recording on (``PMQ_METRICS_ADDRESS``), and each process's
totals written to a shared directory every second
(``PMQ_METRICS_SNAPSHOT_DIR``, a fresh one per run). Scrapes are not part of
it: they run in the serving process, and read the gauges once per
``cache_seconds`` whatever the number of scrapers.

Usage::

    python bench/metrics_cost.py --n 10000 --reps 3

Prints one JSON document: the drain rates of each repetition, their medians,
how much slower "on" is, in per cent; the CPU seconds the worker processes
used per drain (a figure that, unlike the rate, hardly moves when other work
shares the machine), and how much more "on" used; and the plugin's own cost per job,
measured apart from the drain's noise: a successful job through the hooks
facade with and without the plugin, timed in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_dir  # noqa: E402
from run import run_once  # noqa: E402

#: Jobs the per-job measurement runs through the hooks.
HOOK_JOBS = 50_000


def hooks_microseconds() -> float:
    """Microseconds of CPU the plugin adds to a successful job's hook calls,
    through pmq's hooks facade (as the worker calls them), in this process."""
    from pmq_prometheus import plugin

    from pmq_core import JobContext
    from pmq_core.plugins import Plugins

    now = datetime.now(UTC)
    job = JobContext(id=uuid.uuid4(), queue="bench", payload={}, attempt=1, max_attempts=5, priority=100,
                     created_at=now, started_at=now, raw_payload={}, run_at=now)

    async def handler() -> None:
        return None

    async def cpu_per_job(hooks: Any) -> float:
        started = time.process_time()
        for _ in range(HOOK_JOBS):
            hooks.job_started(job=job)
            await hooks.wrap_job(job=job, handler=handler)
            hooks.job_succeeded(job=job, result=None, duration=0.0)
        return (time.process_time() - started) / HOOK_JOBS * 1e6

    off = Plugins(None, [], entry_points=False).load().hooks
    on = Plugins(None, [plugin], entry_points=False).load().hooks
    plugin.pmq_worker_started({"metrics": plugin.MetricsSettings(address="127.0.0.1:0")})
    return asyncio.run(cpu_per_job(on)) - asyncio.run(cpu_per_job(off))


def per_job_cost() -> float:
    out = subprocess.run([sys.executable, __file__, "--hooks-only"], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    if sys.argv[1:] == ["--hooks-only"]:
        print(hooks_microseconds())
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="jobs per drain (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default: %(default)s)")
    ap.add_argument("--drain-procs", type=int, default=2, help="worker processes (default: %(default)s)")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_METRICS_")}
    # A Redis database of its own (the harness flushes it), apart from a peer benchmark running beside it.
    base.setdefault("BENCH_REDIS_DB", "11")
    base.update(BENCH_N=str(args.n), BENCH_DRAIN_PROCS=str(args.drain_procs),
                **{peer_dir.ENV: str(peer_dir.resolve())})
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    for _rep in range(args.reps):
        for label in ("off", "on"):
            env = dict(base)
            with tempfile.TemporaryDirectory(prefix="pmq-bench-metrics-") as directory:
                if label == "on":
                    env.update(BENCH_PMQ_METRICS="1", PMQ_METRICS_ADDRESS="127.0.0.1:0",
                               PMQ_METRICS_SNAPSHOT_DIR=directory)
                row = run_once(sys.executable, HERE / "bench_pmq.py", "drain", env)
            if "error" in row:
                raise SystemExit(f"metrics_cost: the {label} drain failed: {row['error']}")
            rates[label].append(row["rate"])
            cpu[label].append(row["pmq_workers_cpu_s"])
            print(json.dumps({"metrics": label, "rate": row["rate"], "cpu_s": row["pmq_workers_cpu_s"]}),
                  file=sys.stderr, flush=True)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    cpu_off, cpu_on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    print(json.dumps({"n": args.n, "reps": args.reps, "drain_procs": args.drain_procs, "rates": rates,
                      "median_off": off, "median_on": on, "slower_percent": round(100 * (off - on) / off, 1),
                      "cpu_s": cpu, "median_cpu_off": cpu_off, "median_cpu_on": cpu_on,
                      "more_cpu_percent": round(100 * (cpu_on - cpu_off) / cpu_off, 1),
                      "hooks_us_per_job": round(per_job_cost(), 1)}))


if __name__ == "__main__":
    main()
