"""`pmq health`'s rules: each finding and the verdict it gives, first as
plain rules over a report's facts, then end to end against real servers: no
migrator, a wedged leader, workers that cannot reach Redis, a schema that
is missing or out of date."""

from __future__ import annotations

import copy
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg
import pytest

from pmq_core import health
from pmq_core.admin import Admin
from pmq_core.migrator import Migrator
from pmq_core.testing import Servers, _with_database, wait_until
from tests.plugin_samples import Recorder, make_plugin
from tests.reliability_support import background_worker, sql

# -- the rules, on facts alone ------------------------------------------------------------


def facts(**changes: Any) -> dict[str, Any]:
    """A healthy report's facts: one served queue, one worker, a live leader."""
    report: dict[str, Any] = {
        "postgres": {"ok": True}, "redis": {"ok": True}, "redis_config": [],
        "schema": {"ok": True, "installed": True, "pending": []},
        "migrator": {"backend_pid": 7, "hostname": "h", "pid": 1, "leading_for": 60.0, "beat_age": 0.5},
        "queues": [{"name": "q", "active": True, "waiting": 0, "in_redis": 0, "oldest_age": None,
                    "workers": 1, "served": True}],
        "workers": [{"hostname": "h", "pid": 2, "redis_ok": True, "redis_error": None, "redis_error_age": None}],
        "oldest_job_age": None,
    }
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target: Any = report
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(leaf) if leaf.isdigit() else leaf] = value
    return report


DEAF = {"hostname": "h", "pid": 2, "redis_ok": False, "redis_error": "ConnectionError: refused",
        "redis_error_age": 12.0}

# (facts, verdict, a fragment of the one finding it gives)
RULES = [
    (facts(), "healthy", None),
    (facts(postgres={"ok": False}, migrator=None, queues=[], workers=[]), "critical", "PostgreSQL is unreachable"),
    (facts(redis={"ok": False}), "critical", "Redis is unreachable"),
    (facts(schema={"ok": False, "installed": False, "pending": ["0001_initial"]}), "critical",
     "no pmq schema: run `pmq db upgrade`"),
    (facts(schema={"ok": False, "installed": True, "pending": ["0007_liveness"]}), "critical",
     "older than this pmq (0007_liveness not applied): run `pmq db upgrade`"),
    (facts(migrator=None), "warning", "no migrator leads"),
    (facts(migrator=None, queues__0__waiting=5, queues__0__in_redis=5), "warning", "no migrator leads"),
    (facts(migrator=None, queues__0__waiting=5, queues__0__in_redis=2), "critical",
     "no migrator leads: 3 due job(s) wait in PostgreSQL"),
    (facts(migrator=None, queues__0__waiting=5, queues__0__active=False), "warning", "no migrator leads"),
    (facts(migrator__beat_age=29.0), "healthy", None),
    (facts(migrator__beat_age=31.0), "critical", "h pid 1) holds the lead but has not finished"),
    (facts(migrator={"backend_pid": 7, "hostname": None, "pid": None, "leading_for": None, "beat_age": None}),
     "warning", "PostgreSQL backend 7) has written no liveness beat"),
    (facts(workers__0=DEAF), "warning", "worker h pid 2 cannot reach Redis (for 12s: ConnectionError: refused)"),
    (facts(workers__0=DEAF, queues__0__served=False, queues__0__waiting=3), "critical",
     "queue 'q' has 3 due job(s) and every live worker serving it (1) cannot reach Redis"),
    (facts(queues__0__served=False, queues__0__workers=0, queues__0__waiting=3, queues__0__oldest_age=59.0),
     "warning", "queue 'q' has 3 waiting job(s) and no live worker serves it"),
    (facts(queues__0__served=False, queues__0__workers=0, queues__0__waiting=3, queues__0__oldest_age=60.0),
     "critical", "no live worker serves it (is its plugin loaded on a worker?); the oldest has waited 60s"),
    (facts(queues__0__served=False, queues__0__workers=0, queues__0__waiting=3, queues__0__active=False),
     "healthy", None),
    (facts(oldest_job_age=301.0), "warning", "the oldest waiting job has waited 301s"),
    (facts(redis_config=["Redis keeps nothing on disk"]), "warning", "Redis keeps nothing on disk"),
]


@pytest.mark.parametrize(("report", "verdict", "finding"), RULES)
def test_each_rule_gives_its_verdict_and_names_the_problem(report, verdict, finding):
    found = health.judge(copy.deepcopy(report), stale_after=30.0)
    assert found.verdict == verdict
    if finding is None:
        assert found.problems + found.warnings == []
        return
    # The finding that decides the verdict comes first, alone of its kind.
    decisive = found.problems if verdict == "critical" else found.warnings
    assert len(decisive) == 1 and finding in decisive[0], (found.problems, found.warnings)
    assert health.EXIT_STATUS[found.verdict] == {"warning": 1, "critical": 2}[verdict]


def test_a_schema_problem_is_the_only_finding_checked():
    report = facts(schema={"ok": False, "installed": False, "pending": []}, migrator=None)
    report["queues"][0].update(waiting=9, served=False, workers=0, oldest_age=999.0)
    found = health.judge(report, stale_after=30.0)
    assert (found.verdict, len(found.problems), found.warnings) == ("critical", 1, [])


# -- against real servers -------------------------------------------------------------------


def finding(report: dict[str, Any], fragment: str) -> str | None:
    return next((f for f in report["problems"] + report["warnings"] if fragment in f), None)


def echo_of(report: dict[str, Any]) -> dict[str, Any]:
    return next(q for q in report["queues"] if q["name"] == "echo")


def test_no_migrator_is_critical_while_jobs_wait_in_postgres(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False, dispatch_on_enqueue=False)
    with rt.admin() as admin:
        idle = admin.health()
        assert idle["migrator"] is None and idle["status"] == "warning"
        assert finding(idle, "no migrator leads") in idle["warnings"]
        rt.enqueue("echo", {"n": 1})
        waiting = admin.health()
        assert waiting["status"] == "critical"
        assert finding(waiting, "no migrator leads: 1 due job(s) wait in PostgreSQL") in waiting["problems"]
        migrator = rt.start_migrator()
        led = admin.health()
    assert led["migrator"]["pid"] is not None and led["migrator"]["beat_age"] < 30
    assert finding(led, "no migrator leads") is None and migrator.is_leader.is_set()


def test_a_wedged_leader_is_critical_and_recovers(pmq_runtime, monkeypatch):
    """A leader stuck inside a round (a hung Redis call, say) keeps its lock;
    its beat goes stale, and health says so by name."""
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    wedged: list[bool] = []
    release = threading.Event()
    real_migrate = Migrator.migrate

    def stuck(self: Migrator, *args: Any) -> Any:
        if not release.is_set():
            wedged.append(True)
            release.wait(30)
        return real_migrate(self, *args)

    monkeypatch.setattr(Migrator, "migrate", stuck)
    rt.start_migrator()
    wait_until(lambda: wedged, bool, 10, "the migrator did not get stuck")
    # Age its beat rather than wait rescue_after for it to age.
    sql(rt.settings.database_url, "UPDATE pmq_migrator_leader SET beat_at = now() - interval '1 minute'")
    with rt.admin() as admin:
        report = admin.health()
        assert report["status"] == "critical" and report["migrator"]["hostname"] == socket.gethostname()
        problem = finding(report, "holds the lead but has not finished a housekeeping round for 60s")
        assert problem in report["problems"] and "it is wedged" in problem
        release.set()
        wait_until(admin.health, lambda r: r["migrator"]["beat_age"] < 5 and finding(r, "wedged") is None, 10,
                   "the leader's beat did not come back")


def test_a_worker_that_cannot_reach_redis_is_named_and_its_waiting_queue_critical(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False)
    deaf = attrs.evolve(rt.settings, redis_url="redis://127.0.0.1:1/0")
    rt.client.enqueue_many("echo", [{"n": i} for i in range(100)])
    with background_worker(deaf, rt.plugins, queues=["echo"]), rt.admin() as admin:
        report = wait_until(admin.health, lambda r: r["workers"] and not r["workers"][0]["redis_ok"], 10,
                            "the worker did not report that it cannot reach Redis")
        assert report["status"] == "critical"
        assert "cannot reach Redis" in finding(report, f"pid {report['workers'][0]['pid']} cannot reach Redis")
        queue = echo_of(report)
        assert (queue["waiting"], queue["workers"], queue["served"]) == (100, 1, False)
        assert finding(report, "queue 'echo' has 100 due job(s) and every live worker serving it (1) "
                               "cannot reach Redis") in report["problems"]
        rt.start_worker(queues=["echo"])
        report = wait_until(admin.health, lambda r: echo_of(r)["waiting"] == 0 and len(r["workers"]) == 2, 20,
                            "the healthy worker did not take the jobs")
        # The deaf worker is still named, but no longer costs any job anything.
        assert report["status"] == "warning" and report["problems"] == []
        assert [w["redis_ok"] for w in report["workers"]].count(False) == 1


@pytest.fixture
def silent_redis() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers: a wedged Redis.
    Closing it resets them (closed at the end whatever happens)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield server
    finally:
        server.close()


def test_a_worker_whose_redis_never_answers_is_reported_deaf(pmq_runtime, silent_redis, monkeypatch):
    monkeypatch.setattr("pmq_core.heartbeat.HUNG_AFTER", 0.2)
    rt = pmq_runtime(make_plugin(Recorder()), worker=False)
    hung = attrs.evolve(rt.settings, redis_url=f"redis://127.0.0.1:{silent_redis.getsockname()[1]}/0")
    with rt.admin() as admin, background_worker(hung, rt.plugins, queues=["echo"]) as worker:
        report = wait_until(admin.health, lambda r: r["workers"] and not r["workers"][0]["redis_ok"], 10,
                            "the worker did not report its unanswered pop")
        assert report["workers"][0]["id"] == str(worker.id)
        assert "no answer from Redis to a 1s pop for over 0.2s" in report["workers"][0]["redis_error"]
        silent_redis.close()  # let the worker's pop fail, so that it can stop


# -- the schema -------------------------------------------------------------------------------


@pytest.fixture
def empty_database(pmq_servers: Servers) -> Iterator[str]:
    """A database on the test server with no pmq schema at all."""
    name = f"pmq_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pmq_servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(pmq_servers.database_url, name)
    finally:
        pmq_servers.drop_database(_with_database(pmq_servers.database_url, name))


def test_a_missing_or_outdated_schema_is_critical(pmq_settings, empty_database):
    with Admin(attrs.evolve(pmq_settings, database_url=empty_database)) as admin:
        report = admin.health()
    assert report["status"] == "critical" and report["schema"]["installed"] is False
    assert report["problems"] == ["the database has no pmq schema: run `pmq db upgrade`"]

    sql(pmq_settings.database_url, "DELETE FROM pmq_schema_migrations WHERE version = 7")
    with Admin(pmq_settings) as admin:
        outdated = admin.health()
        assert outdated["status"] == "critical" and outdated["schema"]["pending"] == ["0007_liveness"]
        assert "older than this pmq (0007_liveness not applied): run `pmq db upgrade`" in outdated["problems"][0]
