"""pmq against its peers, in one interleaved run: ``nox -s bench``.

Every repetition runs every library through every scenario before the next
repetition starts, so that the machine's drifting noise spreads over all of
them alike; the tables hold the medians. Each single run is one
``bench/harness.py <lib> <scenario>`` process (a fresh database, a flushed
Redis db) under pmq's interpreter for pmq and under the peers' virtualenv
(:mod:`peers`, created on first use) for the others.

Usage::

    python bench/run.py                                  # everything, about 12 minutes on a quiet machine
    python bench/run.py --peers pgqueuer --scenarios drain,latency --reps 1
    python bench/run.py --quick                          # every scenario, small, 1 rep: a minute or two

The tables are printed as Markdown, then one JSON document (also written
to ``--json``). Needs PostgreSQL (``--pg``, trust auth) and Redis
(``--redis``, a db nothing else uses: each run flushes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402

SCENARIOS = ("enqueue", "bulk", "drain", "latency", "sync", "queues", "io", "priority")
PEERS = ("pgqueuer", "procrastinate", "saq", "dramatiq", "celery", "rq", "arq")
#: Seconds of simulated I/O per job in the io scenario, and its slots per worker.
IO_SLEEP, IO_CONCURRENCY = 0.020, 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", default="all", help="comma-separated peers, 'all' or 'none' (default: %(default)s)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="default: all of %(default)s")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default: %(default)s)")
    ap.add_argument("--n", type=int, default=10_000, help="jobs per enqueue, bulk and drain run (default: %(default)s)")
    ap.add_argument("--drain-procs", type=int, default=2, help="worker processes of a drain (default: %(default)s)")
    ap.add_argument("--queues", default="10,100,300",
                    help="queue counts of the queues scenario; the drain is the 1-queue row (default: %(default)s)")
    ap.add_argument("--io-n", type=int, default=5_000, help="jobs of the io scenario (default: %(default)s)")
    ap.add_argument("--backlog", type=int, default=50_000,
                    help="low-band backlog of the priority scenario (default: %(default)s)")
    ap.add_argument("--lat-n", type=int, default=300, help="timed jobs of latency and priority (default: %(default)s)")
    ap.add_argument("--cap", type=float, default=8.0,
                    help="seconds after which an enqueue loop or a drain is measured on the jobs done so far "
                    "(default: %(default)s)")
    ap.add_argument("--quick", action="store_true",
                    help="small and once: --reps 1 --n 1000 --io-n 1000 --backlog 5000 --lat-n 50")
    ap.add_argument("--pg", default=os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"),
                    help="a PostgreSQL URL allowed to create databases (default: %(default)s)")
    ap.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5"),
                    help="a Redis db of the benchmark's own: every run flushes it (default: %(default)s)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the JSON document here")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.n, args.io_n, args.backlog, args.lat_n = 1, 1_000, 1_000, 5_000, 50
    if min(args.reps, args.n, args.io_n, args.backlog, args.lat_n, args.drain_procs) < 1:
        ap.error("--reps, --n, --io-n, --backlog, --lat-n and --drain-procs must be at least 1")
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    args.peers = list(PEERS) if args.peers == "all" else [] if args.peers in ("none", "") else args.peers.split(",")
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    args.queue_counts = [int(q) for q in args.queues.split(",") if q]
    return args


def runs_of(args: argparse.Namespace) -> list[tuple[str, str, dict[str, str]]]:
    """(key, scenario, environment) of every single run in one repetition
    of one library, in order."""
    base = {"BENCH_N": str(args.n), "BENCH_PROCS": str(args.drain_procs), "BENCH_LAT_N": str(args.lat_n)}
    out = []
    for scenario in args.scenarios:
        env = dict(base)
        if scenario == "sync":
            env["BENCH_HANDLER"] = "sync"
        elif scenario == "io":
            env.update(BENCH_N=str(args.io_n), BENCH_PROCS="1", BENCH_SLEEP=str(IO_SLEEP),
                       BENCH_CONCURRENCY=str(IO_CONCURRENCY))
        elif scenario == "priority":
            env.update(BENCH_N=str(args.backlog), BENCH_BACKLOG=str(args.backlog), BENCH_PAD="1000")
        if scenario == "queues":
            out += [(f"queues{q}", scenario, dict(env, BENCH_QUEUES=str(q))) for q in args.queue_counts]
        else:
            out.append((scenario, scenario, env))
    return out


def single(python: str, lib: str, scenario: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """One harness process; its JSON line, or an error."""
    try:
        proc = subprocess.run([python, str(HERE / "harness.py"), lib, scenario], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:g} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": ((proc.stderr.strip().splitlines() or ["no output"])[-1])[:300]}
    return json.loads(lines[-1])


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if isinstance(row.get(key), (int, float))]
    return statistics.median(values) if values else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every numeric figure of one library's runs of one scenario."""
    keys = {key for row in rows for key, value in row.items() if isinstance(value, (int, float)) and key != "rep"}
    out: dict[str, Any] = {key: median(rows, key) for key in sorted(keys)}
    notes = sorted({row.get("error") or row.get("note") for row in rows if row.get("error") or row.get("note")})
    if notes:
        out["notes"] = notes
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_before, began = os.getloadavg(), time.monotonic()
    env = dict(os.environ, BENCH_PG_ADMIN=args.pg, BENCH_REDIS_URL=args.redis, BENCH_CAP=str(args.cap),
               BENCH_RUN_DEADLINE=str(max(int(args.cap + 150 + args.backlog / 2_000),
                                          int(os.environ.get("BENCH_RUN_DEADLINE", "0")))))
    pythons = {"pmq": sys.executable}
    if args.peers:
        import peers

        pythons.update(dict.fromkeys(args.peers, str(peers.ensure())))
    infos: dict[str, dict[str, Any]] = {}
    for lib, python in pythons.items():
        infos[lib] = single(python, lib, "version", env, 120)
        if "error" in infos[lib]:
            print(f"bench: {lib} is skipped: {infos[lib]['error']}", file=sys.stderr)
    libs = [lib for lib in pythons if "error" not in infos[lib]]
    plan = runs_of(args)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {lib: {key: [] for key, _, _ in plan} for lib in libs}
    timeout = float(env["BENCH_RUN_DEADLINE"]) + 60
    for rep in range(args.reps):
        for lib in libs:
            for key, scenario, extra in plan:
                if scenario not in infos[lib]["scenarios"]:
                    continue
                started = time.monotonic()
                row = single(pythons[lib], lib, scenario, {**env, **extra}, timeout)
                row.update(lib=lib, key=key, rep=rep, wall_s=round(time.monotonic() - started, 1))
                raw[lib][key].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    results = {lib: {key: summarise(rows) for key, rows in raw[lib].items() if rows} for lib in libs}
    document = {
        "args": {k: v for k, v in vars(args).items() if k not in ("json_path",)},
        "io": {"sleep_s": IO_SLEEP, "concurrency": IO_CONCURRENCY, "procs": 1,
               "ideal_rate": IO_CONCURRENCY / IO_SLEEP},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system(),
                    "load_before": load_before, "load_after": os.getloadavg()},
        "minutes": round((time.monotonic() - began) / 60, 1),
        "libraries": infos, "results": results, "runs": raw,
    }
    print(report.render(document))
    print(json.dumps(document))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n")
    return document


if __name__ == "__main__":
    main()
