"""Flow control on real servers: concurrency caps and rates across several
worker processes, fair turns between partitions, a worker killed while it
holds a capped slot, a Redis wipe, and the operator's commands.

What the tests read is the record workers keep of every attempt in
``job_logs``: the handler's own start and end, whichever process ran it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pmq_core import Admin, JobStatus, Limits
from pmq_core.cli import main
from pmq_core.flow import REDIS_SHARE, Limit
from pmq_core.testing import FAST, wait_until
from tests.flow_plugin import FlowPlugin, start_worker_process


def attempts(url: str, queue: str) -> list[tuple[datetime, datetime]]:
    """(start, end) of every recorded attempt of ``queue``'s jobs, by start."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT l.started_at, l.finished_at FROM job_logs l JOIN jobs j ON j.id = l.job_id "
            "WHERE j.queue_name = %s ORDER BY l.started_at", (queue,)).fetchall()


def most_at_once(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of spans that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def most_in_window(starts: list[datetime], window: timedelta) -> int:
    """The largest number of ``starts`` inside any window of that length."""
    starts = sorted(starts)
    best, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= window:
            first += 1
        best = max(best, last - first + 1)
    return best


def completed(url: str, queue: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE queue_name = %s AND status = 'completed'",
                           (queue,)).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    """Start worker processes serving tests.flow_plugin; all are stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Any, count: int, concurrency: int) -> list[subprocess.Popen[bytes]]:
        for n in range(count):
            log = (tmp_path / f"worker-{len(started)}-{n}.log").open("wb")
            started.append(start_worker_process(settings, log, concurrency))
        return started[-count:]

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_cap_of_five_holds_across_three_worker_processes_and_the_queue_drains_at_five_slots(
        pmq_runtime, workers):
    rt = pmq_runtime(FlowPlugin(), worker=False)
    rt.client.enqueue_many("capped", [{}] * 150)
    workers(rt.settings, count=3, concurrency=20)
    wait_until(lambda: completed(rt.settings.database_url, "capped"), lambda n: n == 150, 60,
               "every capped job should complete")
    spans = attempts(rt.settings.database_url, "capped")
    assert len(spans) == 150
    assert most_at_once(spans) == 5  # never more, and the cap was used
    # The slots were kept busy: the handlers' own time over five slots' span.
    busy = sum((end - start).total_seconds() for start, end in spans)
    span = (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()
    print(f"capped: 150 jobs of 50 ms through 5 slots in {span:.2f}s, slots busy {busy / (5 * span):.0%}")
    assert busy / (5 * span) > 0.3  # a freed slot waits for no poll: the worker wakes the migrator


def test_a_rate_of_fifty_a_second_holds_across_three_worker_processes(pmq_runtime, workers):
    rt = pmq_runtime(FlowPlugin(), worker=False)
    rt.client.enqueue_many("rated", [{}] * 1200)
    workers(rt.settings, count=3, concurrency=20)
    url = rt.settings.database_url
    first = wait_until(lambda: attempts(url, "rated"), bool, 30, "the first rated job should start")[0][0]
    wait_until(lambda: attempts(url, "rated")[-1][0], lambda last: last - first >= timedelta(seconds=20), 40,
               "rated jobs should go on starting for 20 seconds")
    starts = [start for start, _ in attempts(url, "rated") if start - first < timedelta(seconds=20)]
    busiest = most_in_window(starts, timedelta(seconds=1))
    print(f"rated: {len(starts)} starts in 20 s, at most {busiest} in any 1-second window")
    assert busiest <= 50
    assert 900 <= len(starts) <= 1000


def test_partitions_take_turns_so_a_backlog_delays_a_newcomer_by_one_share(pmq_runtime):
    rt = pmq_runtime(FlowPlugin(), worker=False)
    rt.client.enqueue_many("fair", [{"tenant": "A"}] * 5000)
    concurrency = 2
    rt.start_worker(concurrency=concurrency)
    url = rt.settings.database_url
    wait_until(lambda: completed(url, "fair"), lambda n: n >= 300, 60, "partition A's backlog should be running")
    with psycopg.connect(url) as conn:
        arrived = conn.execute("SELECT now()").fetchone()[0]
    late = rt.client.enqueue_many("fair", [{"tenant": "B"}] * 20)
    rt.wait_all(late, timeout=30)
    with psycopg.connect(url) as conn:
        last_b = conn.execute("SELECT max(started_at) FROM jobs WHERE partition_key = 'B'").fetchone()[0]
        a_between = conn.execute(
            "SELECT count(*) FROM jobs WHERE partition_key = 'A' AND started_at > %s AND started_at < %s",
            (arrived, last_b)).fetchone()[0]
    # The bound: A's jobs already in Redis (the queue's share), those the
    # worker holds, and one A job per B job in turn, plus one per pass.
    bound = REDIS_SHARE + concurrency + 2 * len(late)
    print(f"fair: {a_between} of A's jobs started while B's 20 waited (bound {bound})")
    assert a_between <= bound < 200


def test_a_worker_killed_while_holding_a_capped_slot_gives_it_back_within_the_rescue_window(
        pmq_runtime, workers, tmp_path):
    rt = pmq_runtime(FlowPlugin(), worker=False, migrator=False)
    with Admin(rt.settings) as admin:
        admin.set_limit("plain", concurrency=1)
    rt.start_migrator()
    url = rt.settings.database_url
    hold = tmp_path / "hold"
    hold.write_text("")
    first = rt.client.enqueue("plain", {"hold": str(hold)})
    second = rt.client.enqueue("plain", {})
    (victim,) = workers(rt.settings, count=1, concurrency=4)
    wait_until(lambda: rt.job(first).status, lambda s: s == JobStatus.RUNNING, 20, "the first job should run")
    assert rt.job(second).status == JobStatus.QUEUED  # held back by the cap
    victim.kill()
    victim.wait()
    hold.unlink()
    killed_at = datetime.now().astimezone()
    workers(rt.settings, count=1, concurrency=4)
    done = rt.wait_all([first, second], timeout=FAST["rescue_after"] * 4 + 20)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    spans = attempts(url, "plain")
    assert most_at_once(spans) == 1
    assert min(start for start, _ in spans[1:]) > killed_at  # nothing started beside the lost slot


def test_a_redis_wipe_loses_no_limit_and_no_job(pmq_runtime, pmq_servers):
    rt = pmq_runtime(FlowPlugin(), worker=False)
    ids = rt.client.enqueue_many("capped", [{}] * 100)
    rt.start_worker(concurrency=20)
    url = rt.settings.database_url
    wait_until(lambda: completed(url, "capped"), lambda n: n >= 20, 30, "capped jobs should be running")
    pmq_servers.drop_keys(rt.settings.key_prefix)  # messages, the held-back record: everything in Redis
    done = rt.wait_all(ids, timeout=60)
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert most_at_once(attempts(url, "capped")) <= 5


def test_jobs_held_back_by_a_limit_are_counted_apart_from_waiting_ones(pmq_runtime):
    rt = pmq_runtime(FlowPlugin(), worker=False, migrator=False)
    with Admin(rt.settings) as admin:
        admin.set_limit("plain", partition="slow-tenant", rate="2/h")
    rt.start_migrator()
    rt.client.enqueue_many("plain", [{}] * 5, partition="slow-tenant")
    rt.client.enqueue_many("plain", [{}] * 3, partition="other")
    url = rt.settings.database_url
    rt.start_worker(concurrency=4)
    wait_until(lambda: completed(url, "plain"), lambda n: n == 5, 20, "two of slow-tenant's and all others run")

    def plain_row() -> dict[str, Any]:
        with Admin(rt.settings) as admin:
            return next(q for q in admin.stats()["queues"] if q["name"] == "plain")

    row = wait_until(plain_row, lambda q: q["held"] == 3, 10, "three jobs should be held back")
    assert row["waiting"] == 0


def test_a_partition_rule_and_an_explicit_partition_are_stored_and_bad_ones_refused(pmq_runtime):
    rt = pmq_runtime(FlowPlugin(), worker=False, migrator=False)
    by_rule = rt.client.enqueue("fair", {"tenant": "acme"})
    explicit = rt.client.enqueue("fair", {"tenant": "acme"}, partition="mailbox:42")
    with psycopg.connect(rt.settings.database_url) as conn:
        stored = dict(conn.execute("SELECT id, partition_key FROM jobs").fetchall())
    assert stored == {by_rule: "acme", explicit: "mailbox:42"}
    for bad in ("", "x" * 201, "a\x00b", 42):
        with pytest.raises(Exception, match="partition"):
            rt.client.enqueue("plain", {}, partition=bad)
    with pytest.raises(Exception, match="partition"):
        rt.client.enqueue("fair", {"tenant": 7})  # the rule gave a number
    with psycopg.connect(rt.settings.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO jobs (queue_name, partition_key) VALUES ('plain', '')")


def test_handlers_see_their_jobs_partition_in_the_worker_and_in_the_isolation_child(pmq_runtime):
    from pmq_core.cli.jobs import _describe_job

    rt = pmq_runtime(FlowPlugin(), worker=False)
    expected = {rt.client.enqueue("partitioned", {}, partition="mailbox:42"): "partition='mailbox:42'",
                rt.client.enqueue("partitioned", {}): "partition=None"}
    suspect = rt.client.enqueue("partitioned", {}, partition="mailbox:7")  # runs in the isolation child
    expected[suspect] = "partition='mailbox:7'"
    with psycopg.connect(rt.settings.database_url) as conn:
        conn.execute("UPDATE jobs SET rescue_count = 1 WHERE id = %s", (suspect,))
    rt.start_worker()

    ended = {job.id: job for job in rt.wait_all(expected)}

    assert {job_id: job.last_error_message for job_id, job in ended.items()} == {
        job_id: f"RuntimeError: {seen}" for job_id, seen in expected.items()}
    assert "partition    mailbox:7\n" in _describe_job(ended[suspect])
    assert ended[suspect].to_dict()["partition_key"] == "mailbox:7"


@pytest.mark.parametrize("row", [
    "('plain', 'queue', '', 'operator', NULL, 5, NULL)",  # a rate without a period
    "('plain', 'queue', '', 'operator', 0, NULL, NULL)",  # a cap of 0
    "('plain', 'everything', '', 'operator', 1, NULL, NULL)",
    "('plain', 'partition', '', 'operator', 1, NULL, NULL)",  # a partition's limit naming none
    "('plain', 'queue', '', 'operator', NULL, 1, 0)",
    "('nowhere', 'queue', '', 'operator', 1, NULL, NULL)",
])
def test_the_schema_refuses_limits_no_migrator_could_apply(pmq_runtime, row):
    rt = pmq_runtime(FlowPlugin(), worker=False, migrator=False)
    with psycopg.connect(rt.settings.database_url) as conn, pytest.raises(psycopg.errors.IntegrityError):
        conn.execute("INSERT INTO pmq_limits (queue_name, scope, partition_key, origin, concurrency, rate, period) "
                     f"VALUES {row}")


def test_a_garbled_held_back_record_in_redis_counts_nothing(pmq_runtime):
    rt = pmq_runtime(FlowPlugin(), worker=False, migrator=False, dispatch_on_enqueue=False)
    rt.client.enqueue("plain", {})
    with Admin(rt.settings) as admin:
        admin.redis.hset(admin.keys.held, mapping={"plain": "{not json", "capped": "[1, 2]", "ghost": "null"})
        row = next(q for q in admin.queues() if q["name"] == "plain")
    assert (row["waiting"], row["held"]) == (1, 0)


# -- the operator's commands -------------------------------------------------------


@pytest.fixture
def pmq(pmq_runtime, monkeypatch, capsys) -> Any:
    """Run `pmq` (its entry point, in this process) on a deployment with the
    flow plugin's queues; returns what it printed."""
    rt = pmq_runtime(FlowPlugin(), worker=False, migrator=False)
    for key in [key for key in os.environ if key.startswith("PMQ_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PMQ_DATABASE_URL", rt.settings.database_url)
    monkeypatch.setenv("PMQ_REDIS_URL", rt.settings.redis_url)
    monkeypatch.setenv("PMQ_KEY_PREFIX", rt.settings.key_prefix)

    def run(*args: str, code: int = 0) -> str:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        printed = capsys.readouterr()
        assert exited.value.code == code, printed.out + printed.err
        return printed.out + printed.err

    return run


def test_operators_set_list_and_lift_limits_over_declared_ones(pmq):
    listed = json.loads(pmq("queues", "limits", "--json"))
    assert {(r["queue"], r["scope"], r["concurrency"], r["rate"], r["origin"]) for r in listed} == {
        ("capped", "queue", 5, None, "declared"), ("rated", "queue", None, "50/s", "declared"),
        ("fair", "queue", None, None, "declared")}
    assert pmq("queues", "limit", "capped", "--rate", "100/minute").strip() == "capped: concurrency 5, rate 100/m"
    assert "each partition of plain: concurrency 2" in pmq("queues", "limit", "plain", "--per-partition",
                                                           "--concurrency", "2")
    assert "partition mailbox:9 of plain: rate 40/d" in pmq("queues", "limit", "plain", "--partition", "mailbox:9",
                                                           "--rate", "40 / day")
    table = pmq("queues", "limits", "capped")
    assert "declared (overridden)" in table and "100/m" in table
    lifted = pmq("queues", "unlimit", "capped")
    assert "lifted capped: concurrency 5, rate 100/m (operator)" in lifted
    in_force = [r for r in json.loads(pmq("queues", "limits", "capped", "--json")) if r["in_force"]]
    assert [(r["concurrency"], r["rate"], r["origin"]) for r in in_force] == [(None, None, "operator")]
    pmq("queues", "unlimit", "capped", "--keep-declared")
    in_force = [r for r in json.loads(pmq("queues", "limits", "capped", "--json")) if r["in_force"]]
    assert [(r["concurrency"], r["origin"]) for r in in_force] == [(5, "declared")]


BAD_LIMITS = [
    (["queues", "limit", "plain"], "give --concurrency and/or --rate"),
    (["queues", "limit", "plain", "--rate", "ten/s"], "is not N/PERIOD"),
    (["queues", "limit", "plain", "--rate", "10/ms"], "is not N/PERIOD"),
    (["queues", "limit", "plain", "--concurrency", "0"], "not a whole number from 1"),
    (["queues", "limit", "plain", "--concurrency", "-3"], "not a whole number from 1"),
    (["queues", "limit", "plain", "--rate", "5/400d"], "rate period"),
    (["queues", "limit", "plain", "--concurrency", "1", "--per-partition", "--partition", "x"], "not both"),
    (["queues", "limit", "plain", "--concurrency", "1", "--partition", "x" * 300], "over the limit"),
    (["queues", "limit", "nowhere", "--concurrency", "1"], "unknown queue"),
    (["queues", "unlimit", "nowhere"], "unknown queue"),
]


def test_bad_limits_get_one_clear_error_and_change_nothing(pmq):
    for args, message in BAD_LIMITS:
        output = pmq(*args, code=1 if message == "unknown queue" else 2)
        assert message in output, args
        assert len(output.strip().splitlines()) == 1 and "Traceback" not in output, output
    assert not [r for r in json.loads(pmq("queues", "limits", "--json")) if r["origin"] == "operator"]


def test_pmq_plugins_shows_declared_limits():
    from pmq_core.cli.plugins import _describe_job_type

    described = {jt.name: _describe_job_type(jt.describe()) for jt in FlowPlugin().pmq_register_job_types()}
    assert "limits: queue concurrency 5, each partition none" in described["capped"]
    assert "limits: queue rate 50/s" in described["rated"]
    assert "limits" not in described["plain"]
    assert Limits(each_partition=Limit(rate="3/h")).describe() == {"queue": "none", "each": "rate 3/h"}
