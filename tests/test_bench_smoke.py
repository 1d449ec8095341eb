"""The benchmark, run small, so that it cannot rot.

No timing is asserted: only that every scenario ran its jobs, that the
costs it reports were measured, and that the JSON document has the shape
``docs/performance.md`` and the ``bench`` session rely on. It runs on the
test session's servers. Each run flushes the Redis db it is given, so the
test claims one of the dbs 10-15 nobody else of pmq uses (a lock key in db 0
keeps two test sessions on one server apart).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pmq_core.testing import Servers

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".bench-peers-venv" / "bin" / "python"
N = 200
#: The priority scenario's backlog must outlast its ten timed jobs even on a fast
#: machine: 600 once ran out first, and the row then carries a note.
SMALL = ["--reps", "1", "--n", str(N), "--io-n", str(N), "--backlog", "5000", "--lat-n", "10", "--queues", "3",
         "--cap", "30"]
LOCK_TTL = 600


@pytest.fixture
def bench_redis(pmq_servers: Servers) -> Iterator[str]:
    """The URL of a Redis db this test holds alone until it ends."""
    lock = redis.Redis.from_url(pmq_servers.redis_url, db=0)
    token = uuid.uuid4().hex
    for db in range(10, 16):
        if lock.set(f"pmq-bench-smoke:db{db}", token, nx=True, ex=LOCK_TTL):
            break
    else:
        pytest.fail("every Redis db of 10-15 is held by another benchmark smoke test")
    base = pmq_servers.redis_url.rsplit("/", 1)[0] if pmq_servers.redis_url.count("/") > 2 else pmq_servers.redis_url
    try:
        yield f"{base}/{db}"
    finally:
        if lock.get(f"pmq-bench-smoke:db{db}") == token.encode():
            lock.delete(f"pmq-bench-smoke:db{db}")


def run_bench(pmq_servers: Servers, redis_url: str, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """The benchmark's JSON document and its printed tables."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--pg", pmq_servers.base.database_url, "--redis", redis_url,
         "--json", str(out), *SMALL, *args],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pmq |" in proc.stdout
    document = json.loads(out.read_text())
    assert {"args", "io", "machine", "libraries", "results", "runs"} <= set(document)
    return document, proc.stdout


def test_every_scenario_runs_pmq_and_measures_its_costs(pmq_servers: Servers, bench_redis: str,
                                                        tmp_path: Path) -> None:
    document, _ = run_bench(pmq_servers, bench_redis, tmp_path, "--peers", "none")
    pmq = document["results"]["pmq"]
    assert set(pmq) == {"enqueue", "bulk", "drain", "latency", "sync", "queues3", "io", "priority"}
    assert not [row for rows in document["runs"]["pmq"].values() for row in rows if "error" in row or "note" in row]
    for key in ("drain", "sync", "queues3", "io"):
        assert pmq[key]["done"] == N, key
        assert pmq[key]["rate"] > 0, key
        # Every kind of process was measured: the workers, the run database's backends and Redis.
        assert pmq[key]["cpu_ms_workers"] > 0 and pmq[key]["cpu_ms_pg"] > 0 and pmq[key]["cpu_ms_redis"] >= 0, key
        # A job is at least written when it is claimed and when it finishes.
        assert pmq[key]["pg_rows_per_job"] >= 2, key
        assert pmq[key]["pg_wal_bytes_per_job"] > 0, key
    assert pmq["latency"]["samples"] == 10 and pmq["priority"]["samples"] == 10
    assert pmq["priority"]["backlog_rate"] > 0
    assert document["libraries"]["pmq"]["settings"]


@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason="the peers' virtualenv (.bench-peers-venv) is not there: "
                    "python bench/peers.py creates it")
def test_a_peer_runs_beside_pmq_and_ratios_come_out(pmq_servers: Servers, bench_redis: str, tmp_path: Path) -> None:
    document, tables = run_bench(pmq_servers, bench_redis, tmp_path, "--peers", "pgqueuer", "--scenarios", "drain")
    peer = document["libraries"]["pgqueuer"]
    assert peer["version"] and peer["settings"]
    drain = document["results"]["pgqueuer"]["drain"]
    assert drain["done"] == N and drain["pg_rows_per_job"] > 0 and drain["cpu_ms_pg"] > 0
    ratio_row = next(line for line in tables.splitlines() if line.startswith("| pgqueuer |") and "×" in line)
    assert ratio_row.split(" | ")[3].endswith("×")  # the drain ratio
