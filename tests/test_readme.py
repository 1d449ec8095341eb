"""README's Python examples run as written, against this suite's servers:
each runs as a script in a fresh namespace, with pmq's settings (``PMQ_*``)
pointing at the test's own database and key prefix, as an application's
would."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from pmq_core import JobStatus

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def block_with(text: str) -> str:
    (block,) = [b for b in python_blocks() if text in b]
    return block


@pytest.fixture
def app_environment(pmq_settings, monkeypatch):
    """The environment of an application using the test's servers."""
    for name in ("database_url", "redis_url", "key_prefix"):
        monkeypatch.setenv(f"PMQ_{name.upper()}", getattr(pmq_settings, name))
    monkeypatch.delenv("PMQ_PLUGINS", raising=False)
    return pmq_settings


def test_the_transactional_example_commits_the_job_with_the_data(app_environment):
    url = app_environment.database_url
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE signups (email text)")
    namespace: dict[str, object] = {}
    exec(compile(block_with("conn.transaction()"), "README.md", "exec"), namespace)
    namespace["client"].close()  # type: ignore[attr-defined]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT email FROM signups").fetchall() == [("ada@example.com",)]
        jobs = conn.execute("SELECT queue_name, payload->>'to', status FROM jobs").fetchall()
    assert jobs in ([("email-sending", "ada@example.com", status.value)]
                    for status in (JobStatus.QUEUED, JobStatus.MIGRATED_TO_REDIS))


def test_the_enqueue_examples_run(app_environment):
    namespace: dict[str, object] = {}
    exec(compile(block_with("client.enqueue_many"), "README.md", "exec"), namespace)
    namespace["client"].close()  # type: ignore[attr-defined]
    with psycopg.connect(app_environment.database_url) as conn:
        counts = dict(conn.execute("SELECT queue_name, count(*) FROM jobs GROUP BY 1").fetchall())
    assert counts == {"email-sending": 10_001, "webhook:process": 1}
