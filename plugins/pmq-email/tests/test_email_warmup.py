"""warmup:process: a ramping plan whose steps schedule each other."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from email_testkit import run_job
from pmq_email.payloads import WarmupStep
from pmq_email.warmup import volume

from pmq_core import Admin, JobStatus, PayloadError, Rate, testing

PLAN = {"account": "sales@acme.example", "start": 10, "target": 100, "growth": 2.0}


def steps(settings):
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute("SELECT day, volume, next_job_id IS NOT NULL FROM pmq_email_warmup_steps "
                            "ORDER BY day").fetchall()


def test_volume_ramps_up_to_the_target():
    assert [volume(WarmupStep(**PLAN, day=d)) for d in range(6)] == [10, 20, 40, 80, 100, 100]
    assert volume(WarmupStep(**PLAN, day=100_000)) == 100


def test_a_step_records_its_day_and_schedules_the_next(email_db, email_plugin):
    before = datetime.now(UTC)
    result = run_job(email_plugin, email_db.resources, "warmup:process", {**PLAN, "day": 2, "every_seconds": 3600})
    after = datetime.now(UTC)
    assert (result["day"], result["volume"], result["complete"]) == (2, 40, False)
    following = email_db.runtime.job(uuid.UUID(result["next_job_id"]))
    assert following.queue_name == "warmup:process" and following.status is JobStatus.QUEUED
    assert following.payload == {**PLAN, "day": 3, "every_seconds": 3600.0}
    assert before + timedelta(hours=1) <= following.run_at <= after + timedelta(hours=1)
    again = run_job(email_plugin, email_db.resources, "warmup:process", {**PLAN, "day": 2, "every_seconds": 3600})
    assert again["already"] and again["next_job_id"] == result["next_job_id"]
    assert steps(email_db.settings) == [(2, 40, True)]


def mailbox_limits(settings):
    with Admin(settings) as admin:
        return {row.partition: row.limit.rate for row in admin.limits("email-sending") if row.partition}


def test_each_step_sets_the_mailboxs_daily_limit_and_the_last_leaves_the_target(email_db, email_plugin):
    run_job(email_plugin, email_db.resources, "warmup:process", {**PLAN, "day": 2})
    assert mailbox_limits(email_db.settings) == {"mailbox:sales@acme.example": Rate(40, 86400)}
    last = run_job(email_plugin, email_db.resources, "warmup:process", {**PLAN, "day": 4})
    assert last["complete"] and mailbox_limits(email_db.settings) == {"mailbox:sales@acme.example": Rate(100, 86400)}
    run_job(email_plugin, email_db.resources, "warmup:process", {**PLAN, "day": 2}, attempt=2)  # replayed
    assert mailbox_limits(email_db.settings) == {"mailbox:sales@acme.example": Rate(100, 86400)}


def test_the_plan_runs_to_completion(pmq_runtime, email_plugin):
    rt = pmq_runtime(email_plugin)
    rt.enqueue("warmup:process", {**PLAN, "every_seconds": 0})
    done = testing.wait_until(lambda: steps(rt.settings), lambda s: len(s) == 5, 20, "the plan did not finish")
    assert done == [(0, 10, True), (1, 20, True), (2, 40, True), (3, 80, True), (4, 100, False)]


def test_a_plan_that_cannot_finish_is_refused(email_db):
    with pytest.raises(PayloadError, match="warmup:process"):
        email_db.runtime.enqueue("warmup:process", {**PLAN, "growth": 1.0})
    with pytest.raises(PayloadError, match="must be at most 2147483647"):
        email_db.runtime.enqueue("warmup:process", {**PLAN, "target": 2**31})
    with pytest.raises(PayloadError, match="account must be a bare email address"):
        email_db.runtime.enqueue("warmup:process", {**PLAN, "account": "sales team"})
