"""The benchmark, run small and without peers, so that it cannot rot.

No timing is asserted: only that every scenario ran every job through the
shared peer harness and that the JSON document has the shape the docs and
the ``bench`` session rely on. The harness needs PostgreSQL at
127.0.0.1:5432 and Redis at 127.0.0.1:6379 (it says so itself); it flushes
one Redis db of its own (9 here) and creates and drops its own database.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import peer_dir  # noqa: E402

N = 200
LAT_N = 20
#: A Redis db of the shared server that nothing else of pmq's uses.
SMOKE_REDIS_DB = "9"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def peers_dir() -> Path:
    try:
        found = peer_dir.resolve()
    except peer_dir.PeerBenchNotFound as exc:
        pytest.skip(str(exc))
    if not (_listening(5432) and _listening(6379)):
        pytest.skip("the peer harness needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379")
    return found


def test_peer_dir_names_the_variable_when_missing(tmp_path: Path) -> None:
    with pytest.raises(peer_dir.PeerBenchNotFound, match=peer_dir.ENV):
        peer_dir.resolve(str(tmp_path))


def test_bench_runs_every_job_and_reports_json(peers_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ, PEER_BENCH_DIR=str(peers_dir), BENCH_LAT_N=str(LAT_N), BENCH_LAT_GAP="0.005",
               BENCH_REDIS_DB=SMOKE_REDIS_DB, BENCH_LOG_DIR=str(tmp_path / "logs"),
               BENCH_RESULTS_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--peers", "none", "--n", str(N), "--reps", "1",
         "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pmq |" in proc.stdout
    document = json.loads(out.read_text())
    assert {"n", "reps", "drain_procs", "modes", "machine", "results", "ratios", "runs"} <= set(document)
    pmq = document["results"]["pmq"]
    assert {"version", "backend", "enqueue", "bulk", "drain", "latency_p50", "latency_p99",
            "worker_peak_rss_mb", "notes"} <= set(pmq)
    assert pmq["notes"] == []
    runs = document["runs"]["pmq"]
    for mode in ("enqueue", "bulk", "drain", "latency"):
        (row,) = runs[mode]
        assert "error" not in row, row
    assert runs["drain"][0]["done"] == N
    assert runs["latency"][0]["samples"] == LAT_N
    assert all(pmq[key] > 0 for key in ("enqueue", "bulk", "drain", "latency_p50", "worker_peak_rss_mb"))
