"""How pmq scales: drain with 1, 2 and 4 worker processes, and enqueue and
drain with many jobs already in the table.

Each configuration is one ``bench/run.py --peers none`` run (pmq alone, the
same harness); the results are printed as one table and one JSON document.

Usage::

    python bench/scaling.py                      # procs 1,2,4; prefill 0, 10,000, 1,000,000
    python bench/scaling.py --prefill 0,10000,200000 --n 5000 --reps 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def run(n: int, reps: int, modes: str, procs: int, prefill: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        env = dict(os.environ, BENCH_PMQ_PREFILL=str(prefill),
                   BENCH_RUN_DEADLINE=str(165 + prefill // 5_000))  # room for the prefill itself
        subprocess.run([sys.executable, str(HERE / "run.py"), "--peers", "none", "--n", str(n), "--reps", str(reps),
                        "--scenarios", modes, "--drain-procs", str(procs), "--json", str(out)],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        document = json.loads(out.read_text())
    rates = {scenario: row.get("rate") for scenario, row in document["results"]["pmq"].items()}
    return {"procs": procs, "prefill": prefill, "n": n, **rates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--prefill", default="0,10000,1000000")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    rows = [run(args.n, args.reps, "drain", int(p), 0) for p in args.procs.split(",")]
    rows += [run(args.n, args.reps, "enqueue,bulk,drain", 2, int(k)) for k in args.prefill.split(",")]
    print("| worker procs | jobs already in table | enqueue 1-by-1 jobs/s | bulk jobs/s | drain jobs/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        cells = [row.get(k) for k in ("enqueue", "bulk", "drain")]
        print(f"| {row['procs']} | {row['prefill']:,} | "
              + " | ".join("-" if v is None else f"{v:,.0f}" for v in cells) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
