"""The status enums match the schema's CHECK constraints, without a server:
the worker writes outcomes from these enums, so a value the schema refuses
would fail a whole round."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from pmq_core.models import JobStatus, LogStatus


def admitted(table: str) -> set[str]:
    """The values ``CHECK (status IN (...))`` admits in ``table``'s CREATE TABLE."""
    sql = resources.files("pmq_core").joinpath("sql/migrations/0001_initial.sql").read_text()
    body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", sql, re.S)
    assert body, f"no CREATE TABLE {table} in the first migration"
    check = re.search(r"CHECK \(status IN \(([^)]*)\)\)", body.group(1))
    assert check, f"no status CHECK on {table}"
    return set(re.findall(r"'([a-z_]+)'", check.group(1)))


def test_every_job_status_is_one_the_schema_admits_and_the_reverse():
    assert {status.value for status in JobStatus} == admitted("jobs")


@pytest.mark.parametrize("status", list(LogStatus))
def test_every_log_status_the_worker_writes_is_admitted(status):
    assert status.value in admitted("job_logs")
