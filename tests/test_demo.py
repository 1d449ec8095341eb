"""``pmq demo``: the real command against real servers, and its mix."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import psycopg
import pytest

from pmq_core import demo
from pmq_core.jobtypes import JobType


def _count(summary: str, label: str) -> int:
    match = re.search(rf"^\s+{label}\s+(\d+)", summary, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{summary}"
    return int(match[1])


def test_pmq_demo_runs_every_job_to_a_final_state(pmq_settings, tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_")}
    env.update({"PMQ_DATABASE_URL": pmq_settings.database_url, "PMQ_REDIS_URL": pmq_settings.redis_url,
                "PMQ_KEY_PREFIX": pmq_settings.key_prefix, "PMQ_DATA_DIR": str(tmp_path / "embedded")})

    def pmq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pmq_core.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    # Installed plugins may bring migrations of their own: upgrade first, as an operator would.
    upgraded = pmq("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    result = pmq("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    completed, retried, dead = _count(out, "completed"), _count(out, "retried"), _count(out, "dead")
    enqueued = int(re.search(r"^(\d+) jobs on ", out, re.MULTILINE)[1])  # type: ignore[index]
    assert completed > 0 and dead > 0 and retried > 0 and completed + dead == enqueued
    assert re.search(r"^completed +\d+/\d+ +retrying +\d+ +dead +\d+$", out, re.MULTILINE)  # plain progress lines
    assert "\r" not in out  # not a terminal: nothing is redrawn in place
    for command in ("pmq dlq list", "pmq stats", "pmq health"):
        assert command in out

    with psycopg.connect(pmq_settings.database_url) as conn:
        # The demo's own jobs, exactly; plugins' jobs may enqueue follow-ups of their own.
        own = dict(conn.execute("SELECT status, count(*) FROM jobs WHERE queue_name LIKE 'demo:%%' "
                                "GROUP BY status").fetchall())
        own_retries = conn.execute("SELECT count(*) FROM job_logs l JOIN jobs j ON j.id = l.job_id "
                                   "WHERE l.status = 'retry' AND j.queue_name LIKE 'demo:%%'").fetchone()[0]
        left_due = conn.execute("SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'failed', 'cancelled') "
                                "AND run_at <= now()").fetchone()[0]
        failed = conn.execute("SELECT count(*) FROM jobs WHERE status = 'failed'").fetchone()[0]
    declared = {entry.queue: entry.count for entry in demo.MIX if entry.declares is not None}
    assert own == {"completed": sum(declared.values()) - declared["demo:doomed"], "failed": declared["demo:doomed"]}
    assert own_retries > 0 and own_retries <= retried
    assert left_due == 0  # nothing due was left queued, running or waiting for a retry
    assert failed == dead


def test_demo_skips_entries_whose_job_type_is_not_loaded(pmq_settings, monkeypatch):
    extra = demo.DemoJobs(queue="not-installed:anywhere", count=5, payload=lambda i: {"i": i})
    monkeypatch.setattr(demo, "MIX", [*demo.MIX, extra])
    out = io.StringIO()
    summary = demo.run(attrs.evolve(pmq_settings, plugins=()), out=out)
    assert summary.finished and "not-installed:anywhere" not in summary.queues
    assert summary.enqueued == sum(entry.count for entry in demo.MIX if entry.declares is not None)
    assert out.getvalue().startswith(f"enqueued {summary.enqueued} jobs")
    assert f"completed {summary.completed:>4}/{summary.enqueued}" in out.getvalue()


def test_progress_is_redrawn_in_place_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tally = demo.Tally()
    out = Terminal()
    demo._follow(tally, out, deadline=0, worker_died=lambda: False)
    assert out.getvalue() == "\rcompleted    0/0   retrying   0   dead   0\n"


def test_a_demo_entry_that_declares_a_job_type_must_name_its_queue():
    job_type = JobType(name="demo:other", handler=print)
    with pytest.raises(ValueError, match="declares job type 'demo:other'"):
        demo.DemoJobs(queue="demo:thumbnail", count=1, payload=lambda i: {}, declares=job_type)
