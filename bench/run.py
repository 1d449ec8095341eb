"""pmq against its peers, in one interleaved run: ``nox -s bench``.

Every repetition runs every library through every scenario before the next
repetition starts, so that this machine's drifting noise spreads over all of
them alike; the table holds the medians. The scenarios and the peers' code
are the shared peer harness's (see :mod:`peer_dir`); pmq's side is
:mod:`bench_pmq`, which plugs into the same harness.

Usage::

    python bench/run.py                          # pmq + the fastest peers, 3 reps, N=10,000
    python bench/run.py --peers all              # every peer of the harness
    python bench/run.py --peers none --n 200 --reps 1 --json out.json   # pmq alone (smoke)

pmq runs under this interpreter; the peers under their own virtualenv
(:mod:`peers`, created on first use). The table is printed, then one JSON
document (also written to ``--json`` when given).
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

import peer_dir  # noqa: E402

MODES = ("enqueue", "bulk", "drain", "latency")
FASTEST_PEERS = ("pgqueuer", "saq", "dramatiq", "procrastinate")
ALL_PEERS = ("rq", "dramatiq", "celery", "procrastinate", "pgqueuer", "arq", "saq")
#: The metric each scenario yields, and whether more is better.
METRICS = {"enqueue": ("rate", True), "bulk": ("rate", True), "drain": ("rate", True),
           "latency_p50": ("p50", False), "latency_p99": ("p99", False)}
#: Seconds one harness run may take: its own deadline plus set-up and clean-up.
RUN_TIMEOUT = float(os.environ.get("BENCH_RUN_DEADLINE", "165")) + 60


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", default=",".join(FASTEST_PEERS),
                    help="comma-separated peers, 'all' or 'none' (default: %(default)s)")
    ap.add_argument("--modes", default=",".join(MODES), help="scenarios (default: all four)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default: %(default)s)")
    ap.add_argument("--n", type=int, default=10_000, help="jobs per scenario (default: %(default)s)")
    ap.add_argument("--drain-procs", type=int, default=2, help="worker processes in the drain scenario")
    ap.add_argument("--peer-bench-dir", default=None, help=f"the peer harness folder (or ${peer_dir.ENV})")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the JSON document here")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.n < 1:
        ap.error("--reps and --n must be at least 1")
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        ap.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    if args.peers == "all":
        args.peers = list(ALL_PEERS)
    elif args.peers in ("none", ""):
        args.peers = []
    else:
        args.peers = args.peers.split(",")
        unknown = sorted(set(args.peers) - set(ALL_PEERS) - {"rq_simple"})
        if unknown:
            ap.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(ALL_PEERS)}, rq_simple")
    return args


def script(lib: str, peers_dir: Path) -> Path:
    return HERE / "bench_pmq.py" if lib == "pmq" else peers_dir / f"bench_{lib}.py"


def run_once(python: str, path: Path, mode: str, env: dict[str, str]) -> dict[str, Any]:
    """One harness run; its JSON lines merged (pmq adds a memory line)."""
    try:
        proc = subprocess.run([python, str(path), mode], cwd=path.parent, env=env, capture_output=True,
                              text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"timeout {RUN_TIMEOUT} s"}
    merged: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            merged.update(json.loads(line))
    if "lib" not in merged:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        merged.update(mode=mode, error=tail[:300])
    return merged


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(lib: str, info: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"version": info.get("version"), "backend": info.get("backend")}
    for metric, (key, _) in METRICS.items():
        mode = "latency" if metric.startswith("latency") else metric
        out[metric] = median(runs.get(mode, []), key)
    notes = sorted({row.get("error") or row.get("note") for rows in runs.values() for row in rows
                    if (row.get("error") or row.get("note")) and row.get("note") != "no bulk API"})
    out["notes"] = notes
    if lib == "pmq":
        rss = [row["pmq_worker_peak_rss_mb"] for rows in runs.values() for row in rows
               if "pmq_worker_peak_rss_mb" in row]
        out["worker_peak_rss_mb"] = max(rss) if rss else None
    return out


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """pmq's figure divided by each peer's: above 1 is better for rates,
    below 1 is better for latencies."""
    ours = results["pmq"]
    table: dict[str, dict[str, float | None]] = {}
    for lib, theirs in results.items():
        if lib == "pmq":
            continue
        table[lib] = {metric: (ours[metric] / theirs[metric]) if ours.get(metric) and theirs.get(metric) else None
                      for metric in METRICS}
    return table


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(results: dict[str, dict[str, Any]], ratio: dict[str, dict[str, float | None]], args: Any) -> str:
    head = ("| library | version | backend | enqueue 1-by-1 jobs/s | bulk enqueue jobs/s | "
            f"drain jobs/s ({args.drain_procs} procs) | latency p50 ms | latency p99 ms | notes |")
    lines = [head, "|" + "---|" * 9]
    for lib, row in results.items():
        lines.append("| " + " | ".join([
            lib, str(row["version"]), str(row["backend"]), fmt(row["enqueue"]), fmt(row["bulk"]),
            fmt(row["drain"]), fmt(row["latency_p50"], 1), fmt(row["latency_p99"], 1),
            "; ".join(row["notes"])]) + " |")
    if ratio:
        lines += ["", "pmq ÷ peer (rates: above 1 means pmq is faster; latencies: below 1 means pmq is faster)", "",
                  "| peer | enqueue | bulk | drain | p50 | p99 |", "|---|---|---|---|---|---|"]
        for lib, row in ratio.items():
            lines.append("| " + " | ".join([lib] + [fmt(row[m], 2) + "×" if row[m] else "n/a" for m in METRICS])
                         + " |")
    if "pmq" in results:
        lines += ["", f"pmq worker peak RSS: {fmt(results['pmq'].get('worker_peak_rss_mb'), 1)} MB"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        peers_dir = peer_dir.resolve(args.peer_bench_dir)
    except peer_dir.PeerBenchNotFound as exc:
        raise SystemExit(f"bench: {exc}") from None
    env = dict(os.environ, BENCH_N=str(args.n), BENCH_DRAIN_PROCS=str(args.drain_procs),
               **{peer_dir.ENV: str(peers_dir)})
    pythons = {"pmq": sys.executable}
    if args.peers:
        import peers

        peer_python = str(peers.ensure())
        pythons.update({lib: peer_python for lib in args.peers})
    libs = list(pythons)
    infos = {}
    for lib in libs:
        info = run_once(pythons[lib], script(lib, peers_dir), "version", env)
        infos[lib] = info
        if "error" in info:
            print(f"bench: {lib} is skipped: {info['error']}", file=sys.stderr)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {lib: {m: [] for m in args.modes} for lib in libs}
    for rep in range(args.reps):
        for lib in libs:
            if "error" in infos[lib]:
                continue
            for mode in args.modes:
                started = time.monotonic()
                row = run_once(pythons[lib], script(lib, peers_dir), mode, env)
                row.update(lib=lib, rep=rep, wall_s=round(time.monotonic() - started, 1))
                runs[lib][mode].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    results = {lib: summarise(lib, infos[lib], runs[lib]) for lib in libs if "error" not in infos[lib]}
    ratio = ratios(results) if "pmq" in results else {}
    document = {
        "n": args.n, "reps": args.reps, "drain_procs": args.drain_procs, "modes": args.modes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()},
        "results": results, "ratios": ratio, "runs": runs,
    }
    print(f"N={args.n:,}, {args.reps} interleaved repetition(s), medians")
    print(render(results, ratio, args))
    print(json.dumps(document))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n")
    return document


if __name__ == "__main__":
    main()
