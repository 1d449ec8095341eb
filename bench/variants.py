"""What a feature costs pmq's drain: the drain scenario without it and with
it, interleaved in one run.

Variants (each an environment the pmq adapter reads, see
``adapters/bench_pmq.py``):

- ``plain``: pmq as the main benchmark runs it;
- ``metrics``: pmq-prometheus loaded and recording in every worker process,
  as ``pmq run --metrics`` sets it up (scrapes run in the serving process
  and read the gauges once per cache period, so they are not part of it);
- ``limited-neighbour``: one more queue with a concurrency cap, so that every
  migrator pass takes the flow-control path beside the unlimited queue that
  the drain measures;
- ``no-mirror``: the ``status_mirror`` setting off, so that no process
  writes the jobs' status hashes to Redis.

Usage::

    python bench/variants.py --n 10000 --reps 3 [--variants plain,metrics]

Prints one JSON line per drain on stderr, then one JSON document: per
variant the rates and CPU per job of each repetition, their medians, and
how each variant compares with ``plain`` (per cent slower, from the medians
and as the median of each repetition's pair; per cent more CPU per job).
Neither figure is steady when other work shares the machine: CPU per job
moves with the rate too, since a slower drain claims in smaller rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import single  # noqa: E402

VARIANTS: dict[str, dict[str, str]] = {
    "plain": {},
    "metrics": {"BENCH_PMQ_METRICS": "1", "PMQ_METRICS_ADDRESS": "127.0.0.1:0"},
    "limited-neighbour": {"BENCH_PMQ_LIMITED_NEIGHBOUR": "1"},
    "no-mirror": {"PMQ_STATUS_MIRROR": "false"},
}


def drain(variant: str, base: dict[str, str]) -> dict[str, Any]:
    env = {**base, **VARIANTS[variant]}
    with tempfile.TemporaryDirectory(prefix="pmq-bench-variant-") as directory:
        if variant == "metrics":
            env["PMQ_METRICS_SNAPSHOT_DIR"] = directory
        row = single(sys.executable, "pmq", "drain", env, float(env["BENCH_RUN_DEADLINE"]) + 60)
    if "error" in row:
        raise SystemExit(f"variants: the {variant} drain failed: {row['error']}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="jobs per drain (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default: %(default)s)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="default: all of %(default)s")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/11", help="a Redis db the run may flush")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown or "plain" not in variants:
        raise SystemExit(f"variants: choose among {', '.join(VARIANTS)}, plain included")
    base = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_METRICS_")}
    base.update(BENCH_N=str(args.n), BENCH_PG_ADMIN=args.pg, BENCH_REDIS_URL=args.redis,
                BENCH_RUN_DEADLINE=base.get("BENCH_RUN_DEADLINE", "240"))
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for _rep in range(args.reps):
        for variant in variants:
            row = drain(variant, base)
            rows[variant].append(row)
            print(json.dumps({"variant": variant, **row}), file=sys.stderr, flush=True)

    def med(variant: str, key: str) -> float | None:
        values = [r[key] for r in rows[variant] if isinstance(r.get(key), (int, float))]
        return statistics.median(values) if values else None

    cpu_key = "cpu_ms_total"
    out: dict[str, Any] = {"n": args.n, "reps": args.reps, "variants": {}}
    for variant in variants:
        rate, cpu = med(variant, "rate"), med(variant, cpu_key)
        entry: dict[str, Any] = {"rates": [r.get("rate") for r in rows[variant]], "median_rate": rate,
                                 "median_cpu_ms_per_job": cpu}
        plain_rate, plain_cpu = med("plain", "rate"), med("plain", cpu_key)
        if variant != "plain" and rate and plain_rate:
            entry["slower_percent"] = round(100 * (plain_rate - rate) / plain_rate, 1)
            # Each repetition's pair ran back to back: the median of their
            # differences is less moved by the machine's drift over the run.
            pairs = [100 * (p["rate"] - r["rate"]) / p["rate"]
                     for p, r in zip(rows["plain"], rows[variant], strict=True)]
            entry["paired_slower_percent"] = round(statistics.median(pairs), 1)
        if variant != "plain" and cpu and plain_cpu:
            entry["more_cpu_percent"] = round(100 * (cpu - plain_cpu) / plain_cpu, 1)
        out["variants"][variant] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    main()
