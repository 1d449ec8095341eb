"""Poison rows: whatever a producer writes into ``jobs`` (plain SQL
included), it is refused at insert or its job ends dead with a reason; no
migrator or worker stops, and no other job pays for it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from pmq_core import (
    AsyncClient,
    JobStatus,
    JobType,
    PayloadError,
    Retry,
    RetryPolicy,
    UnreadablePayload,
    hookimpl,
    schema,
)
from pmq_core.admin import Admin
from pmq_core.cli import cli
from pmq_core.keys import Keys
from pmq_core.limits import LATEST
from pmq_core.testing import Servers, _with_database, wait_until
from tests.plugin_samples import Recorder, make_plugin
from tests.reliability_support import redis_of, scalar, sql

HUGE_INT = "1" * 5000
DEEP = "[" * 3000 + "]" * 3000
INSERT = "INSERT INTO jobs (queue_name, payload) VALUES (%s, %s::jsonb) RETURNING id"


def insert(url: str, queue: str, payload_json: str, **columns: Any) -> uuid.UUID:
    names = ", ".join(["queue_name", "payload", *columns])
    marks = ", ".join(["%s", "%s::jsonb"] + ["%s"] * len(columns))
    row = sql(url, f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id",
              (queue, payload_json, *columns.values()))
    return uuid.UUID(str(row[0][0]))


def alive(rt: Any) -> bool:
    return all(thread.is_alive() for thread in rt._threads)


# -- refused at insert ----------------------------------------------------------------


@pytest.mark.parametrize("columns", [
    {"run_at": "infinity"}, {"run_at": "-infinity"}, {"run_at": "10000-01-01 00:00+00"},
    {"run_at": "9999-12-31 12:00+00"}, {"run_at": "0001-01-01 00:00+00"}, {"run_at": "0044-03-15 BC"},
    {"created_at": "infinity"}, {"started_at": "-infinity"}, {"completed_at": "infinity"},
    {"failed_at": "10000-01-01"}, {"updated_at": "infinity"},
    {"attempt_count": 2**31 - 1}, {"attempt_count": -1},
    {"status": "retry_scheduled", "attempt_count": 2**31 - 1},
])
def test_values_python_or_the_claim_cannot_handle_are_refused_at_insert(pmq_settings, columns):
    url = pmq_settings.database_url
    sql(url, "INSERT INTO job_queues (name) VALUES ('q')")
    with pytest.raises(psycopg.errors.CheckViolation):
        insert(url, "q", "{}", **columns)
    assert scalar(url, "SELECT count(*) FROM jobs") == 0


def test_values_at_the_edges_of_the_range_are_stored_and_read_back(pmq_settings):
    url = pmq_settings.database_url
    sql(url, "INSERT INTO job_queues (name) VALUES ('q')")
    first = insert(url, "q", "{}", run_at="0001-01-02 00:00+00", status="completed")
    last = insert(url, "q", "{}", run_at="9999-12-30 23:59:59.999999+00", status="failed",
                  attempt_count=2**31 - 1)
    with Admin(pmq_settings) as admin:
        admin.conn.execute("SET TIME ZONE 'Pacific/Kiritimati'")  # +14:00: still within datetime's years
        assert admin.job(first)[0].run_at == datetime(1, 1, 2, tzinfo=UTC)
        admin.conn.execute("SET TIME ZONE 'Etc/GMT+12'")  # -12:00
        assert admin.job(last)[0].attempt_count == 2**31 - 1


def test_a_job_without_a_priority_is_refused_by_update(pmq_settings):
    url = pmq_settings.database_url
    sql(url, "INSERT INTO job_queues (name) VALUES ('q')")
    job_id = insert(url, "q", "{}")
    with pytest.raises(psycopg.errors.NotNullViolation):
        sql(url, "UPDATE jobs SET priority = NULL WHERE id = %s", (job_id,))


def test_the_migration_ends_existing_bad_rows_dead_and_names_the_value(pmq_servers: Servers):
    name = f"pmq_poison_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pmq_servers.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pmq_servers.database_url, name)
    try:
        before, version_4 = schema.core_migrations()[:3], schema.core_migrations()[3]
        with psycopg.connect(url, autocommit=True) as conn:
            for migration in before:
                conn.execute(migration.sql.encode())
            conn.execute("INSERT INTO job_queues (name) VALUES ('q')")
            conn.execute("INSERT INTO jobs (queue_name, run_at) VALUES ('q', 'infinity'), ('q', now())")
            conn.execute("INSERT INTO jobs (queue_name, status, attempt_count) VALUES ('q', 'queued', 2147483647)")
            conn.execute("INSERT INTO jobs (queue_name, status, completed_at) VALUES ('q', 'completed', 'infinity')")
            conn.execute("INSERT INTO pmq_workers (id, hostname, pid, queues, concurrency, heartbeat_at) "
                         "VALUES (gen_random_uuid(), 'h', 1, '{q}', 1, 'infinity')")
            conn.execute(version_4.sql.encode())
            rows = conn.execute("SELECT status, last_error_message, completed_at FROM jobs "
                                "ORDER BY last_error_message NULLS FIRST").fetchall()
            assert rows[0] == ("queued", None, None)  # the good job is untouched
            assert [(status, message) for status, message, _ in rows[1:]] == [
                ("failed", "stored value(s) pmq cannot read or use: attempt_count 2147483647"),
                ("completed", "stored value(s) pmq cannot read or use: completed_at infinity"),
                ("failed", "stored value(s) pmq cannot read or use: run_at infinity"),
            ]
            assert conn.execute("SELECT count(*) FROM pmq_workers").fetchone() == (0,)
    finally:
        with psycopg.connect(pmq_servers.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- refused by the client and the CLI ---------------------------------------------------


PLUS_14 = timezone(timedelta(hours=14))
BAD_TIMES = [
    {"delay": 10**400}, {"delay": 1e300}, {"delay": float("inf")}, {"delay": timedelta.max},
    {"run_at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
    {"run_at": datetime.min.replace(tzinfo=PLUS_14)},
    {"run_at": datetime.max.replace(tzinfo=UTC)},
]


@pytest.mark.parametrize("options", BAD_TIMES)
def test_both_clients_refuse_times_outside_the_range_naming_the_value(pmq_runtime, options):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    with pytest.raises(PayloadError, match=r"(delay|run_at) .*(range|too far)"):
        rt.client.enqueue("aecho", {}, **options)
    with pytest.raises(PayloadError, match=r"(delay|run_at) .*(range|too far)"):
        rt.client.enqueue_many("aecho", [{}, {}], **options)

    async def via_async() -> None:
        async with AsyncClient(rt.settings, plugins=rt.plugins) as client:
            await client.enqueue("aecho", {}, **options)

    with pytest.raises(PayloadError, match=r"(delay|run_at) .*(range|too far)"):
        asyncio.run(via_async())
    assert scalar(rt.settings.database_url, "SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize("args", [["--at", "9999-12-31T23:00:00-05:00"], ["--at", "0001-01-01T00:00:00+14:00"],
                                  ["--delay", "1e400"]])
def test_the_cli_refuses_times_outside_the_range_in_one_line(pmq_settings, args, monkeypatch):
    for key, value in {"PMQ_DATABASE_URL": pmq_settings.database_url, "PMQ_REDIS_URL": pmq_settings.redis_url,
                       "PMQ_KEY_PREFIX": pmq_settings.key_prefix}.items():
        monkeypatch.setenv(key, value)
    sql(pmq_settings.database_url, "INSERT INTO job_queues (name) VALUES ('plain')")
    result = subprocess.run([sys.executable, "-m", "pmq_core.cli", "enqueue", "plain", "{}", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr.startswith("pmq: error: ") and len(result.stderr.splitlines()) == 1
    assert "range" in result.stderr or "too far" in result.stderr
    assert scalar(pmq_settings.database_url, "SELECT count(*) FROM jobs") == 0


# -- ended dead by the worker, with neighbours unharmed -------------------------------------


def test_a_payload_python_cannot_decode_ends_dead_at_once_and_is_shown(pmq_runtime, monkeypatch):
    recorder = Recorder()
    rt = pmq_runtime(make_plugin(recorder), concurrency=4)
    url = rt.settings.database_url
    poison = [insert(url, "aecho", f'{{"n": {HUGE_INT}}}'), insert(url, "aecho", f'{{"deep": {DEEP}}}'),
              insert(url, "echo", '{"n": "not a number", "extra": true}')]
    innocent = [rt.enqueue("aecho", {"i": i}) for i in range(10)]
    assert {job.status for job in rt.wait_all(innocent)} == {JobStatus.COMPLETED}
    dead = rt.wait_all(poison)
    assert [(job.status, job.attempt_count) for job in dead] == [(JobStatus.FAILED, 1)] * 3
    assert "cannot be read (Exceeds the limit (4300 digits)" in (dead[0].last_error_message or "")
    assert "cannot be read (nested too deeply)" in (dead[1].last_error_message or "")
    assert "does not fit" in (dead[2].last_error_message or "")
    assert isinstance(dead[0].payload, UnreadablePayload) and dead[0].payload.prefix.startswith('{"n": 1111')
    assert len(dead[0].payload.prefix) <= 201
    assert alive(rt) and len(recorder.calls) == 10

    for key, value in {"PMQ_DATABASE_URL": url, "PMQ_REDIS_URL": rt.settings.redis_url,
                       "PMQ_KEY_PREFIX": rt.settings.key_prefix}.items():
        monkeypatch.setenv(key, value)
    runner = CliRunner()
    for args in (["jobs", "list"], ["jobs", "list", "--json"], ["jobs", "show", str(poison[0])],
                 ["jobs", "show", str(poison[1]), "--json"], ["dlq", "list"], ["dlq", "list", "--json"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert "unreadable payload" in runner.invoke(cli, ["jobs", "show", str(poison[0])]).output


def test_a_handler_error_postgresql_cannot_store_is_recorded_and_the_worker_goes_on(pmq_runtime):
    class Plugin:
        @hookimpl
        def pmq_register_job_types(self) -> list[Any]:
            def nasty(job: Any) -> None:
                if job.payload.get("kind") == "nul":
                    raise ValueError("a\x00b")
                if job.payload.get("kind") == "surrogate":
                    raise ValueError("lone \ud800 surrogate")
                if job.payload.get("kind") == "far":
                    raise Retry("much later", delay=10**400)

            return [JobType(name="nasty", handler=nasty, retry=RetryPolicy(max_attempts=2, retry_on=()))]

    rt = pmq_runtime(Plugin())
    nul, surrogate = rt.enqueue("nasty", {"kind": "nul"}), rt.enqueue("nasty", {"kind": "surrogate"})
    far, fine = rt.enqueue("nasty", {"kind": "far"}), rt.enqueue("nasty", {})
    assert rt.wait(nul).last_error_message == "ValueError: a\\0b"
    assert rt.wait(surrogate).last_error_message == "ValueError: lone \\ud800 surrogate"
    scheduled = rt.wait(far, statuses=[JobStatus.RETRY_SCHEDULED])
    assert datetime.now(UTC) + timedelta(days=365 * 7000) < scheduled.run_at < LATEST
    assert rt.wait(fine).status is JobStatus.COMPLETED
    assert alive(rt)


def test_a_redis_message_naming_an_attempt_beyond_postgresql_integers_claims_nothing(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()))
    keys = Keys(rt.settings.key_prefix)
    with redis_of(rt.settings) as rds:
        rds.rpush(keys.band("aecho", "normal"), f"{uuid.uuid4()}:{2**40}", f"{uuid.uuid4()}:{'9' * 5000}")
    assert rt.wait(rt.enqueue("aecho", {})).status is JobStatus.COMPLETED
    assert alive(rt)


# -- a row pmq's own statements choke on: set aside, the batch goes on ------------------------

#: A stand-in for any future value PostgreSQL refuses in pmq's update of one
#: row: a trigger failing the update of rows marked "poison" into a state.
FAULT = """
CREATE FUNCTION poison_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payload ? 'poison' AND NEW.status = TG_ARGV[0] AND OLD.status <> NEW.status THEN
        RAISE EXCEPTION 'value out of range for job %%', NEW.id USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER poison_fault BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION poison_fault(%s);
"""


@pytest.mark.parametrize(("state", "who"), [("migrated_to_redis", "hand this job to Redis"),
                                             ("running", "claim or record this job")])
def test_a_job_pmq_cannot_move_or_claim_ends_dead_and_its_batch_goes_on(pmq_runtime, state, who):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False)
    url = rt.settings.database_url
    sql(url, FAULT.replace("%s", f"'{state}'").replace("%%", "%"))
    ids = [insert(url, "aecho", '{"poison": true}' if i == 3 else "{}") for i in range(8)]
    rt.start_worker()
    jobs = rt.wait_all(ids)
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 3 + [JobStatus.FAILED] + [JobStatus.COMPLETED] * 4
    assert f"pmq could not {who}" in (jobs[3].last_error_message or "")
    assert "value out of range" in (jobs[3].last_error_message or "")
    with redis_of(rt.settings) as rds:
        assert rds.lrange(Keys(rt.settings.key_prefix).dead("aecho"), 0, -1) == [str(ids[3]).encode()]
    assert alive(rt)


def test_the_migrator_survives_a_round_that_fails_on_a_stored_value(pmq_runtime, caplog):
    rt = pmq_runtime(make_plugin(Recorder()))
    url = rt.settings.database_url
    # A job held by no worker, whose rescue PostgreSQL refuses on every try.
    sql(url, FAULT.replace("%s", "'queued'").replace("%%", "%"))
    stuck = insert(url, "aecho", '{"poison": true}', status="running", attempt_count=1)
    wait_until(lambda: "migrator round failed on a stored value" in caplog.text, bool, 15,
               "the migrator did not report the failing round")
    # Still leading and migrating: a scheduled job needs the migrator.
    later_job = rt.enqueue("aecho", {}, delay=0.3)
    assert rt.wait(later_job).status is JobStatus.COMPLETED
    assert alive(rt) and rt.job(stuck).status is JobStatus.RUNNING
    failures = caplog.text.count("migrator round failed on a stored value")
    assert failures < 40  # backed off, not a busy loop


def test_admin_and_get_job_read_every_stored_row_without_failing(pmq_runtime):
    rt = pmq_runtime(make_plugin(Recorder()), worker=False, migrator=False)
    url = rt.settings.database_url
    job_id = insert(url, "aecho", f'{{"n": {HUGE_INT}, "deep": {DEEP}}}', status="failed",
                    run_at="0001-01-02 00:00+00", created_at="9999-12-30 00:00+00")
    job = rt.job(job_id)
    assert isinstance(job.payload, UnreadablePayload)
    assert job.to_dict()["payload"].startswith("<unreadable payload (")
    with rt.admin() as admin:
        assert [row["id"] for row in admin.dead()] == [job_id]
        assert [j.id for j in admin.jobs()] == [job_id]
