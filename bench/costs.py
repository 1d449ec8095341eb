"""What a run costs: CPU seconds from /proc, PostgreSQL's own counters.

Linux only (``/proc``). Used by :mod:`harness` for the drain scenarios; see
docs/performance.md for what is counted and what is left out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

#: Runs one statement on an admin connection and returns its rows.
Admin = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU of a process, to the nanosecond, and of the children it has
    reaped (a fork-per-job worker's work-horses, counted in ticks); 0 if it
    is gone. A small run's workers can spend less than the 10 ms tick that
    utime and stime count in."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return on_cpu_seconds(pid) + sum(int(v) for v in fields[13:15]) / TICK  # cutime cstime


def on_cpu_seconds(pid: int) -> float:
    """Time a process's threads have run on a CPU, to the nanosecond (the
    scheduler's own count, per thread: a worker's thread pool and its
    migrator thread count too); 0 if it is gone. A thread that ends takes
    its share with it, which the processes measured here do not do during
    a run (their threads live as long as they do)."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return total / 1e9


def session_pids(sid: int) -> list[int]:
    """Every live process of a session (the worker commands start their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[3]) == sid:
                found.append(int(entry.name))
    return found


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (the high-water mark) of a process, in kB; empty if
    it is gone."""
    found = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def peak_rss_kb(sids: list[int]) -> int:
    """The largest resident-memory high-water mark among the live processes
    of the sessions ``sids`` (each worker command starts its own), read
    before they stop. ``getrusage(RUSAGE_CHILDREN)`` would not do: Linux
    keeps a child's memory from before its exec, which is the harness's own,
    holding every payload it enqueued."""
    return max((rss_kb(pid).get("VmHWM", 0) for sid in sids for pid in session_pids(sid)), default=0)


def machine_busy_seconds() -> float:
    """Busy CPU of the whole machine (all cores) since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / TICK


class CpuMeter:
    """CPU seconds of the processes a drain involves: the worker sessions,
    the PostgreSQL backends connected to the run's database, and the Redis
    server (shared: on a busy machine its figure includes other clients')."""

    def __init__(self, sessions: list[int], redis_url: str, db: str | None, admin: Admin) -> None:
        self.sessions, self.db, self.admin = sessions, db, admin
        self.redis_pid = int(redis.Redis.from_url(redis_url).info("server")["process_id"])
        self.start: dict[str, float] = {}
        self.backends_start: dict[int, float] = {}

    def backend_pids(self) -> list[int]:
        if not self.db:
            return []
        return [row[0] for row in self.admin("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.db,))]

    def sample(self) -> tuple[dict[str, float], dict[int, float]]:
        backends = {pid: on_cpu_seconds(pid) for pid in self.backend_pids()}
        workers = sum(cpu_seconds(pid) for sid in self.sessions for pid in session_pids(sid))
        redis_cpu = on_cpu_seconds(self.redis_pid)
        return {"workers": workers, "redis": redis_cpu, "machine": machine_busy_seconds()}, backends

    def begin(self) -> None:
        self.start, self.backends_start = self.sample()

    def end(self, jobs: int) -> dict[str, float | None]:
        """CPU milliseconds per job since :meth:`begin`, by kind of process."""
        totals, backends = self.sample()
        if jobs <= 0:
            return {}
        pg = sum(cpu - self.backends_start.get(pid, 0.0) for pid, cpu in backends.items())
        per_job = {kind: (totals[kind] - self.start[kind]) * 1000 / jobs for kind in totals}
        per_job["pg"] = pg * 1000 / jobs
        per_job["total"] = per_job["workers"] + per_job["pg"] + per_job["redis"]
        return {f"cpu_ms_{kind}": round(v, 4) for kind, v in per_job.items()}


PG_COUNTERS = """
SELECT d.xact_commit, d.tup_inserted + d.tup_updated + d.tup_deleted, w.wal_bytes, w.wal_records
  FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = %s"""


def pg_counters(db: str | None, admin: Admin) -> tuple[int, ...] | None:
    """Commits and rows written in database ``db``, and the cluster's WAL
    (shared: other databases' writes count too)."""
    if not db:
        return None
    rows = admin(PG_COUNTERS, (db,))
    return tuple(int(v) for v in rows[0]) if rows else None


def pg_work_per_job(before: tuple[int, ...] | None, after: tuple[int, ...] | None, jobs: int) -> dict[str, float]:
    """PostgreSQL's work per job between two readings of :func:`pg_counters`.
    Read the second after the workers have stopped: a backend's counters
    reach the shared statistics when it goes idle for a second or exits."""
    if before is None or after is None or jobs <= 0:
        return {}
    names = ("pg_commits_per_job", "pg_rows_per_job", "pg_wal_bytes_per_job", "pg_wal_records_per_job")
    return {name: round((b - a) / jobs, 2) for name, a, b in zip(names, before, after, strict=True)}
