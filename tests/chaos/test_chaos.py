"""The chaos test: tens of thousands of jobs while worker processes are
SIGKILLed, Redis is wiped and PostgreSQL is killed and restarted, on servers
this test starts for itself, with poison rows written by plain SQL, stubborn
sync handlers that outlive their timeout, and jobs that crash the process
running them among them. Nothing may be lost; the jobs designed to die, the
poison rows and the crashing jobs (and only they) end dead; no two runs of a
job overlap; the rows the schema must refuse are refused. Run it alone:
``pytest -m chaos``.

Tunable through the environment: CHAOS_JOBS (default 20000), CHAOS_WORKERS
(worker processes, default 3), CHAOS_ROUNDS (disruptions, default 12).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from pmq_core import DatabaseUnavailableError, Settings
from pmq_core.admin import Admin
from pmq_core.migrator import Migrator
from pmq_core.testing import FAST, wait_until
from tests import reliability_support
from tests.chaos.workload import (
    CRASH,
    POISON_PAYLOADS,
    QUEUE,
    REFUSED_RUN_ATS,
    RUNS_TABLE,
    STUBBORN,
    plugins,
    start_worker_process,
)
from tests.reliability_support import redis_of, scalar, sql

own_postgres = reliability_support.own_postgres
own_valkey = reliability_support.own_valkey

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

JOBS = int(os.environ.get("CHAOS_JOBS", "20000"))
WORKERS = int(os.environ.get("CHAOS_WORKERS", "3"))
ROUNDS = int(os.environ.get("CHAOS_ROUNDS", "12"))
#: One disruption every this many seconds.
PACE = 3.0
CHUNK = 500
#: Every this many jobs, one sleeps long enough to be caught mid-run by a
#: kill, and one is designed to die.
SLOW_EVERY, DIE_EVERY = 10, 100
#: Copies of each poison row written by plain SQL.
POISON_COPIES = 5
#: Jobs whose sync handler outlives its timeout, and jobs that end the
#: process running them.
STUBBORN_JOBS, CRASH_JOBS = 60, 3
#: Kill, kill, wipe Redis, kill, restart PostgreSQL, in turn.
ACTIONS = ("kill_worker", "kill_worker", "flush_redis", "kill_worker", "restart_postgres")


def payload(index: int) -> dict[str, Any]:
    if index % DIE_EVERY == DIE_EVERY - 1:
        return {"die": True}
    if index % SLOW_EVERY == 0:
        return {"sleep": 0.5}
    return {}


class Producer(threading.Thread):
    """Enqueues the jobs in chunks; a chunk refused while PostgreSQL is down
    (DatabaseUnavailableError: nothing written) is offered again."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.settings = settings
        self.accepted: dict[str, bool] = {}  # job id -> designed to die
        self.refusals = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        from pmq_core import Client

        try:
            with Client(self.settings, plugins=plugins(self.settings.database_url or "")) as client:
                for start in range(0, JOBS, CHUNK):
                    batch = [payload(i) for i in range(start, min(start + CHUNK, JOBS))]
                    while not self.halt.is_set():
                        try:
                            ids = client.enqueue_many(QUEUE, batch)
                            break
                        except DatabaseUnavailableError:
                            self.refusals += 1
                            self.halt.wait(0.2)
                    else:
                        return
                    self.accepted.update({str(i): bool(p.get("die")) for i, p in zip(ids, batch, strict=True)})
                    self.halt.wait(0.5)  # spread over the first disruptions, a PostgreSQL restart included
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_nothing_is_lost_under_chaos(own_postgres, own_valkey, workers, tmp_path):
    settings = attrs.evolve(Settings.load(database_url=own_postgres.url, redis_url=own_valkey.url),
                            key_prefix="chaos:", **{**FAST, "rescue_after": 2.0, "shutdown_grace": 2.0})
    url = settings.database_url
    host = plugins(url)
    with Admin(settings) as admin:
        admin.upgrade(host)
        admin.register_job_types(host)
    sql(url, RUNS_TABLE)
    logs = tmp_path / "logs"
    logs.mkdir()

    def start_worker() -> subprocess.Popen[bytes]:
        log = open(logs / f"worker-{len(workers)}.log", "wb")  # noqa: SIM115
        process = start_worker_process(settings, log, concurrency=20)
        log.close()  # the child holds its own copy
        workers.append(process)
        return process

    for _ in range(WORKERS):
        start_worker()
    stop_migrator = threading.Event()
    migrator = Migrator(settings, host)
    migrator_thread = threading.Thread(target=migrator.run, args=(stop_migrator,), name="chaos-migrator", daemon=True)
    migrator_thread.start()
    producer = Producer(settings)
    began = time.monotonic()
    producer.start()
    poison, refused = write_poison(url)
    from pmq_core import Client

    with Client(settings, plugins=host) as client:
        stubborn = [str(i) for i in client.enqueue_many(STUBBORN, [{}] * STUBBORN_JOBS)]
        culprits = [str(i) for i in client.enqueue_many(CRASH, [{}] * CRASH_JOBS)]
    crashed_workers = 0
    replaced: set[int] = set()

    kills: list[float] = []  # wall-clock times of worker kills
    done_counts: dict[str, int] = {}
    rng = random.Random(5)
    try:
        for round_number in range(ROUNDS):
            stop_migrator.wait(PACE)  # a paced schedule, not a synchronisation
            crashed_workers += replace_crashed(workers, start_worker, replaced)
            action = ACTIONS[round_number % len(ACTIONS)]
            done_counts[action] = done_counts.get(action, 0) + 1
            if action == "kill_worker":
                alive = [p for p in workers if p.poll() is None]
                victim = rng.choice(alive)
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(timeout=10)
                kills.append(time.time())
                start_worker()
            elif action == "flush_redis":
                with redis_of(settings) as rds:
                    rds.flushall()
            else:
                own_postgres.kill()
                own_postgres.start()
        producer.join(timeout=120)
        assert not producer.is_alive(), "the producer did not finish"
        assert producer.error is None, f"the producer failed: {producer.error!r}"

        def finished() -> int:
            nonlocal crashed_workers
            crashed_workers += replace_crashed(workers, start_worker, replaced)
            try:
                return scalar(url, "SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed')")
            except Exception:  # PostgreSQL still recovering
                return -1

        expected = len(producer.accepted) + len(poison) + len(stubborn) + len(culprits)
        wait_until(finished, lambda n: n >= expected, 240,
                   f"not all {expected} jobs finished (worker logs in {logs})")
        elapsed = time.monotonic() - began
    finally:
        producer.halt.set()
        stop_migrator.set()
        migrator_thread.join(timeout=30)

    rows = sql(url, "SELECT id::text, status FROM jobs")
    status_of = dict(rows)
    accepted = producer.accepted
    completed = [i for i, s in status_of.items() if s == "completed"]
    dead = {i for i, s in status_of.items() if s == "failed"}
    designed = {i for i, dies in accepted.items() if dies}
    lost = [i for i in [*accepted, *poison, *stubborn, *culprits] if status_of.get(i) not in ("completed", "failed")]
    poison_reasons = dict(sql(url, "SELECT id::text, last_error_message FROM jobs WHERE id = ANY(%s::uuid[])",
                              (poison,)))
    runs = dict(sql(url, "SELECT job_id::text, count(*) FROM chaos_runs GROUP BY job_id"))
    more_than_once = sum(1 for n in runs.values() if n > 1)
    waits = rescue_waits(url, kills)
    overlaps = overlapping_runs(url)
    innocent_dead = dead - designed - set(poison) - set(culprits)
    report = {
        "enqueued": len(accepted), "completed": len(completed), "dead": len(dead), "designed_to_die": len(designed),
        "poison_rows": len(poison), "poison_dead": len(dead & set(poison)), "refused_at_insert": refused,
        "stubborn_sync_jobs": len(stubborn),
        "stubborn_completed": sum(status_of.get(i) == "completed" for i in stubborn),
        "crashing_jobs": len(culprits), "crashing_dead": len(dead & set(culprits)),
        "workers_crashed_by_a_job": crashed_workers, "innocent_dead": len(innocent_dead),
        "overlapping_runs": len(overlaps), "lost": len(lost), "run_more_than_once": more_than_once,
        "rescued_attempts": len(waits),
        "longest_kill_to_rescue_s": round(max(w[0] for w in waits), 2) if waits else None,
        "longest_kill_to_rerun_s": round(max(w[1] for w in waits), 2) if waits else None,
        "disruptions": done_counts, "enqueue_refusals": producer.refusals, "seconds": round(elapsed, 1),
    }
    print("\nchaos report: " + ", ".join(f"{k}={v}" for k, v in report.items()))

    assert lost == [], f"{len(lost)} job(s) lost, e.g. {lost[:5]}"
    assert len(status_of) == expected, "jobs exist that no producer call returned"
    assert innocent_dead == set(), "only the jobs designed to die, poison rows and crashing jobs may end dead"
    assert dead == designed | set(poison) | set(culprits), "every job designed to die, poison row and crash ends dead"
    assert all(status_of[i] == "completed" for i in stubborn), "a stubborn sync handler's job did not complete"
    assert overlaps == [], f"runs of one job overlapped: {overlaps[:5]}"
    assert all("stored payload cannot be read" in (poison_reasons[i] or "") for i in poison), poison_reasons
    assert refused == POISON_COPIES * len(REFUSED_RUN_ATS), "the schema stored a run_at no migrator can read"
    assert all(runs.get(i, 0) >= 1 for i in completed if i in accepted), "a completed job never ran its handler"
    spanned = {row[0] for row in sql(url, "SELECT DISTINCT job_id::text FROM chaos_spans")}
    assert set(stubborn) <= spanned, "a completed stubborn job never ran its handler to the end"
    assert kills and done_counts.get("flush_redis") and done_counts.get("restart_postgres")


def replace_crashed(workers: list[subprocess.Popen[bytes]], start_worker: Any, replaced: set[int]) -> int:
    """Start a new worker for each that exited by itself (a job crashed it)
    since the last look; how many. A SIGKILLed worker is replaced where it
    is killed, so it is not counted here."""
    crashed = [p for p in workers
               if p.poll() is not None and p.returncode != -signal.SIGKILL and p.pid not in replaced]
    for process in crashed:
        replaced.add(process.pid)
        start_worker()
    return len(crashed)


def overlapping_runs(url: str) -> list[tuple[str, int, int]]:
    """Pairs of runs of one job (id, attempts) whose spans overlap: a run
    that started before an earlier one of the same job had ended."""
    rows = sql(url, "SELECT job_id::text, attempt, started, ended FROM chaos_spans ORDER BY job_id, started")
    found = []
    for (job, attempt, _started, ended), (next_job, next_attempt, next_started, _next_ended) in zip(
            rows, rows[1:], strict=False):
        if job == next_job and next_started < ended:
            found.append((job, attempt, next_attempt))
    return found


def write_poison(url: str) -> tuple[list[str], int]:
    """Write the poison rows by plain SQL, as another program might: the ids
    of those stored, and how many the schema refused."""
    stored, refused = [], 0
    for _ in range(POISON_COPIES):
        for payload_text in POISON_PAYLOADS:
            stored.append(str(scalar(url, "INSERT INTO jobs (queue_name, payload) VALUES (%s, %s::jsonb) RETURNING id",
                                     (QUEUE, payload_text))))
        for run_at in REFUSED_RUN_ATS:
            try:
                sql(url, "INSERT INTO jobs (queue_name, run_at) VALUES (%s, %s)", (QUEUE, run_at))
            except psycopg.errors.CheckViolation:
                refused += 1
    return stored, refused


def rescue_waits(url: str, kills: list[float]) -> list[tuple[float, float]]:
    """For each attempt rescued from a killed worker: seconds from the kill to
    the rescue (the job back in the queue), and to the job's next start."""
    rows = sql(url, """
        SELECT extract(epoch FROM l.started_at)::float8, extract(epoch FROM l.finished_at)::float8,
               extract(epoch FROM coalesce(
                   (SELECT min(n.started_at) FROM job_logs n
                     WHERE n.job_id = l.job_id AND n.attempt_number > l.attempt_number),
                   j.started_at))::float8
          FROM job_logs l JOIN jobs j ON j.id = l.job_id
         WHERE l.log_message LIKE 'worker lost%%'""")
    waits = []
    for attempt_started, rescued, next_started in rows:
        killed = min((k for k in kills if k >= attempt_started), default=None)
        if killed is not None and next_started is not None:
            waits.append((max(0.0, rescued - killed), max(0.0, next_started - killed)))
    return waits
