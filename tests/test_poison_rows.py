"""Rows written by plain SQL, generated: arbitrary values of every column
the schema allows (±infinity, extreme dates, huge and tiny numbers, deep
nesting, odd unicode, long text), mixed with ordinary jobs, on one running
migrator and worker. Every ordinary job completes, no thread dies, and every
odd row is refused at insert or ends finished (dead with a reason when it
failed), unless it is waiting for a time still to come or for a queue no
worker serves."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pmq_core import JobStatus
from pmq_core.models import Job
from pmq_core.testing import wait_until
from tests.plugin_samples import Recorder, make_plugin
from tests.reliability_support import sql

#: A queue inserted by plain SQL with a name the API would refuse; no
#: worker serves it.
ODD_QUEUE = "odd queue\n{x}*:é"
SERVED = ("aecho", "echo")
WAITING = {JobStatus.QUEUED, JobStatus.RETRY_SCHEDULED, JobStatus.MIGRATED_TO_REDIS}

special_times = st.sampled_from([
    "infinity", "-infinity", "epoch", "now", "10000-01-01 00:00+00", "9999-12-31 12:00+00",
    "9999-12-30 23:59:59+00", "0001-01-02 00:00+00", "0001-01-01 00:00+00", "0044-03-15 BC",
    "4713-01-01 BC", "294276-12-31 23:59:59+00",
])
any_time = st.one_of(special_times, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                                                 timezones=st.just(UTC)).map(str))
past_time = st.one_of(special_times, st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(2020, 1, 1),
                                                  timezones=st.just(UTC)).map(str))
numbers = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, 2**31 - 2, -(2**31), 2**31, 2**63]),
                    st.integers(-(2**31), 2**31 - 1))
odd_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=50)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=12)
payload_texts = st.one_of(
    st.dictionaries(odd_text, json_values, max_size=5).map(lambda d: json.dumps(d, ensure_ascii=False)),
    st.sampled_from([
        '{"n": ' + "9" * 5000 + "}", '{"deep": ' + "[" * 3000 + "]" * 3000 + "}",
        '{"d": ' + "{\"a\": " * 900 + "1" + "}" * 900 + "}", '{"n": 1e400}', '{"n": -0}', '{"nul": "\\u0000"}',
        '{"n": 1}', "[]", '"text"',
    ]),
)


OPTIONAL = {
    "status": st.sampled_from(["queued", "retry_scheduled", "migrated_to_redis", "running", "completed",
                               "failed", "cancelled", "bogus"]),
    "priority": numbers, "attempt_count": numbers, "max_attempts": numbers,
    "run_at": past_time, "started_at": any_time, "completed_at": any_time, "failed_at": any_time,
    "created_at": any_time, "updated_at": any_time,
    "last_error_message": st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                  max_size=3000),
    "unique_key": st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                          max_size=3000),
    "worker_id": st.uuids(),
}
#: A row: a queue and a payload, and a few other columns (more, and nearly
#: every row would be refused for one of them).
odd_rows = st.builds(
    lambda required, optional: {**required, **optional},
    st.fixed_dictionaries({"queue_name": st.sampled_from([*SERVED, ODD_QUEUE]), "payload": payload_texts}),
    st.lists(st.sampled_from(sorted(OPTIONAL)), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({name: OPTIONAL[name] for name in names})),
)


def write(url: str, columns: dict[str, Any]) -> uuid.UUID | None:
    """Insert a row by plain SQL; its id, or None when PostgreSQL refused it."""
    names = ", ".join(columns)
    marks = ", ".join("%s::jsonb" if name == "payload" else "%s" for name in columns)
    try:
        found = sql(url, f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id", list(columns.values()))
    except psycopg.Error:
        return None
    return uuid.UUID(str(found[0][0]))


def settled(job: Job, inserted: dict[str, Any]) -> bool:
    """Whether an odd row has reached a state it may stay in."""
    if job.queue_name not in SERVED or inserted.get("status") in ("completed", "failed", "cancelled"):
        return True  # nobody serves its queue, or it was written finished: pmq leaves it be
    if job.status in WAITING and job.run_at > datetime.now(UTC) + timedelta(seconds=5):
        return True  # due later
    if job.status is JobStatus.FAILED:
        return bool(job.last_error_message)
    return job.status in (JobStatus.COMPLETED, JobStatus.CANCELLED)


@pytest.fixture
def rt(pmq_runtime: Any) -> Any:
    """One runtime shared by every example (Hypothesis runs them all within
    one call of a function-scoped fixture): starting one per example would
    cost most of the test's time."""
    runtime = pmq_runtime(make_plugin(Recorder()), concurrency=8)
    sql(runtime.settings.database_url, "INSERT INTO job_queues (name, default_priority) VALUES (%s, %s)",
        (ODD_QUEUE, -(2**31)))
    return runtime


@given(rows=st.lists(odd_rows, min_size=10, max_size=20))
@settings(max_examples=5, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
def test_odd_rows_are_refused_or_end_and_ordinary_jobs_complete(rt, rows):
    url = rt.settings.database_url
    written = {job_id: row for row in rows if (job_id := write(url, row)) is not None}
    ordinary = {rt.enqueue("aecho", {"i": i}): {"queue_name": "aecho"} for i in range(5)}

    def look() -> tuple[bool, list[tuple[Job, dict[str, Any]]]]:
        alive = all(thread.is_alive() for thread in rt._threads)
        return alive, [(rt.job(job_id), row) for job_id, row in {**written, **ordinary}.items()]

    alive, jobs = wait_until(look, lambda seen: not seen[0] or all(settled(j, row) for j, row in seen[1]), 30,
                             "odd rows and ordinary jobs did not all settle")
    assert alive, "a migrator or worker thread died"
    assert {job.status for job, _row in jobs[len(written):]} == {JobStatus.COMPLETED}
    with rt.admin() as admin:
        assert len(admin.jobs(limit=10_000)) >= len(written)
        admin.dead(limit=10_000)
        admin.health()
