"""Job headers: what pmq_wrap_enqueue wrappers add at enqueue reaches the
running job as job.headers; bad headers are refused before any write; a
wrapper that fails costs the enqueue nothing; and whatever a program stores
in jobs.headers by plain SQL never stops a job."""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
import pytest

from pmq_core import JobStatus, JobType, PayloadError, hookimpl
from pmq_core.headers import MAX_HEADERS_BYTES


def stored_jobs(rt: Any) -> int:
    with psycopg.connect(rt.settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    assert row is not None
    return int(row[0])


class Seen:
    """A job type that returns the headers its job saw, and remembers them."""

    def __init__(self) -> None:
        self.headers: dict[Any, dict[str, str]] = {}

    def handler(self, job: Any) -> None:
        self.headers[job.id] = dict(job.headers)

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="hdr", handler=self.handler)]


class Tagging:
    """Adds a header to every enqueue and records how each ended."""

    def __init__(self, headers: dict[str, Any]) -> None:
        self.add = headers
        self.ended: list[tuple[str, Any]] = []

    @hookimpl
    def pmq_wrap_enqueue(self, queue: str, headers: dict[str, str]) -> Any:
        headers.update(self.add)
        try:
            ids = yield
        except Exception as exc:
            self.ended.append(("error", type(exc).__name__))
            raise
        self.ended.append(("ids", ids))


def test_pmq_wrap_enqueue_headers_reach_the_running_job(pmq_runtime):
    seen, tagging = Seen(), Tagging({"traceparent": "00-abc-def-01"})
    rt = pmq_runtime(seen, tagging)
    one = rt.enqueue("hdr")
    many = rt.client.enqueue_many("hdr", [{}] * 70)  # COPY carries them too
    rt.wait_all([one, *many])
    assert seen.headers[one] == {"traceparent": "00-abc-def-01"}
    assert all(seen.headers[i] == {"traceparent": "00-abc-def-01"} for i in many)
    assert tagging.ended == [("ids", [one]), ("ids", many)]


@pytest.mark.parametrize(("bad", "message"), [
    ({"n": 1}, "job header 'n' must be a string, got int"),
    ({"": "x"}, "job header names must be non-empty strings"),
    ({"k": "a\x00b"}, "contains a NUL character"),
    ({"k": "x" * MAX_HEADERS_BYTES}, f"over the limit of {MAX_HEADERS_BYTES}"),
])
def test_pmq_wrap_enqueue_bad_headers_fail_the_enqueue_and_write_nothing(pmq_runtime, bad, message):
    tagging = Tagging(bad)
    rt = pmq_runtime(Seen(), tagging, worker=False, migrator=False)
    with pytest.raises(PayloadError, match=message):
        rt.enqueue("hdr")
    assert tagging.ended == [("error", "PayloadError")]
    assert stored_jobs(rt) == 0


class Broken:
    @hookimpl
    def pmq_wrap_enqueue(self, headers: dict[str, str]) -> Any:
        headers["half"] = "written"
        raise RuntimeError("tracing is down")
        yield  # a generator function, like any wrapper


def test_a_pmq_wrap_enqueue_that_fails_is_logged_and_left_out(pmq_runtime, caplog):
    seen = Seen()
    rt = pmq_runtime(seen, Broken())
    with caplog.at_level(logging.ERROR, logger="pmq_core.plugins"):
        job_id = rt.enqueue("hdr")
    assert rt.wait(job_id).status is JobStatus.COMPLETED
    assert seen.headers[job_id] == {}  # its half-written header left out with it
    assert "pmq_wrap_enqueue failed before its yield" in caplog.text


@pytest.mark.parametrize("stored", [
    None, """'{"n": 1, "ok": "yes", "deep": {"a": "b"}, "none": null}'""",
    # Nests deeper than Python's JSON decoder can follow, within the size bound.
    "'{\"k\": " + "[" * 1500 + "]" * 1500 + "}'",
])
def test_plain_sql_headers_of_any_shape_never_stop_a_job(pmq_runtime, stored):
    seen = Seen()
    rt = pmq_runtime(seen)
    column, value = ("", "") if stored is None else (", headers", f", {stored}::jsonb")
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        row = conn.execute(f"INSERT INTO jobs (id, queue_name, payload{column}) "  # noqa: S608
                           f"VALUES (gen_random_uuid(), 'hdr', '{{}}'{value}) RETURNING id").fetchone()
    assert row is not None
    assert rt.wait(row[0]).status is JobStatus.COMPLETED
    expected = {"ok": "yes"} if stored and "ok" in stored else {}
    assert seen.headers[row[0]] == expected


@pytest.mark.parametrize("value", [json.dumps({"k": "x" * MAX_HEADERS_BYTES}), "[1, 2]", "42", '"text"'])
def test_the_schema_refuses_large_or_non_object_headers_from_any_writer(pmq_runtime, value):
    rt = pmq_runtime(Seen(), worker=False, migrator=False)
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn, \
            pytest.raises(psycopg.errors.CheckViolation, match="jobs_headers_small"):
        conn.execute("INSERT INTO jobs (id, queue_name, payload, headers) VALUES (gen_random_uuid(), 'hdr', '{}', %s)",
                     [value])
    assert stored_jobs(rt) == 0
