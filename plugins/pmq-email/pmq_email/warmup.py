"""warmup:process: one day of an account's warm-up plan.

A new sending account earns a good reputation by sending a little, then a
little more each day: on day ``n`` its volume is
``min(target, ceil(start * growth**n))``. Each step records that day's
volume and enqueues the next day's step as a delayed job, in the same
transaction, so a step that runs twice records one row and schedules one
successor. The plan completes on the first day that reaches the target.

Each step also makes that day's volume the mailbox's limit on
email-sending: a rate of ``volume`` per day, set as an operator's limit on
the partition ``mailbox:<account>`` (pmq's flow control holds back the
rest; see :mod:`pmq_email.partitions`). The plan owns that limit: each step
overwrites it, and the last step leaves the target in force. A step run
again sets it again, unless a later day is already recorded (a replayed
old step must not lower the limit).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import attrs

from pmq_core import Admin, JobContext
from pmq_email import partitions
from pmq_email.database import Database
from pmq_email.payloads import WarmupStep
from pmq_email.queries import q
from pmq_email.sending import SENDING_QUEUE

log = logging.getLogger(__name__)

WARMUP_QUEUE = "warmup:process"


def volume(step: WarmupStep) -> int:
    """The number of messages the account may send on ``step.day``."""
    try:
        raw = step.start * step.growth ** step.day
    except OverflowError:
        return step.target
    return min(step.target, math.ceil(raw))


def limit_mailbox(db: Database, account: str, volume: int) -> None:
    """Let ``account`` send ``volume`` messages in any 24 hours."""
    with Admin(db.settings) as admin:
        admin.set_limit(SENDING_QUEUE, partition=partitions.mailbox(account), rate=partitions.daily(volume))


def run_step(job: JobContext, db: Database) -> dict[str, Any]:
    """The warmup:process handler."""
    step: WarmupStep = job.payload
    today = volume(step)
    complete = today >= step.target
    with db.connection() as conn, conn.transaction():
        row = conn.execute(q("insert_warmup_step"), {"account": step.account, "day": step.day, "volume": today,
                                                     "target": step.target}).fetchone()
        if row is None:
            earlier = conn.execute(q("warmup_step"), {"account": step.account, "day": step.day}).fetchone()
            assert earlier is not None
            next_job = earlier["next_job_id"]
        elif complete:
            next_job = None
        else:
            following = attrs.evolve(step, day=step.day + 1)
            next_job = db.client.enqueue(WARMUP_QUEUE, following, delay=step.every_seconds, conn=conn,
                                         unique_key=f"{step.account}:{following.day}")
            conn.execute(q("set_warmup_next"), {"account": step.account, "day": step.day, "next_job_id": next_job})
        latest = conn.execute(q("warmup_latest_day"), {"account": step.account}).fetchone()
    if latest is not None and latest["day"] <= step.day:
        limit_mailbox(db, step.account, today)
    log.info("warmup:process %s: %s day %d volume %d%s", job.id, step.account, step.day, today,
             " (plan complete)" if complete else "")
    return {"account": step.account, "day": step.day, "volume": today, "complete": complete,
            "next_job_id": str(next_job) if next_job else None, "already": row is None}
