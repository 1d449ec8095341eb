"""Every Redis key pmq uses, in one place, so the on-Redis format is visible
at a glance.

All keys start with the configured prefix (default ``pmq:``), so that several
deployments can share one Redis. A queue's keys carry its name as a hash tag
(``{name}``), so that on Redis Cluster its bands live in one slot.

======================  =====================================================
``P{q}:high``           list of messages, priority <= 50
``P{q}``                list of messages, priority 51-150
``P{q}:low``            list of messages, priority > 150
``P{q}:dead``           list of dead job ids, newest first (mirror of
                        PostgreSQL's ``failed`` jobs, for replay tools)
``Pjob:<id>``           hash mirroring a live job's status, for real-time
                        views; expires an hour after the job finishes
``Pcancel``             pub/sub channel: ids of running jobs to stop
======================  =====================================================

A message is ``<job id>:<attempt count>``: a hint that the job is ready, never
trusted on its own (workers claim it in PostgreSQL first).
"""

from __future__ import annotations

import uuid

from pmq_core.limits import INT32

BANDS = ("high", "normal", "low")

#: How long a finished job's status hash stays readable.
FINISHED_JOB_TTL = 3600


class Keys:
    """The Redis key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.cancel_channel = f"{prefix}cancel"

    def band(self, queue: str, band: str) -> str:
        base = f"{self.prefix}{{{queue}}}"
        return base if band == "normal" else f"{base}:{band}"

    def bands(self, queue: str) -> list[str]:
        """The queue's three lists, most urgent first."""
        return [self.band(queue, band) for band in BANDS]

    def dead(self, queue: str) -> str:
        return f"{self.prefix}{{{queue}}}:dead"

    def job(self, job_id: uuid.UUID | str) -> str:
        return f"{self.prefix}job:{job_id}"


def message(job_id: uuid.UUID | str, attempt: int) -> str:
    return f"{job_id}:{attempt}"


def parse_message(raw: bytes | str) -> tuple[uuid.UUID, int] | None:
    """The job id and attempt a message names, or None when it is malformed
    (a forged or corrupt message is dropped, never run)."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    job_id, _, attempt = text.partition(":")
    try:
        job_id_value, attempt_value = uuid.UUID(job_id), int(attempt)
    except ValueError:
        return None
    # An attempt outside PostgreSQL's integer would fail the whole claim.
    return (job_id_value, attempt_value) if 0 <= attempt_value <= INT32 else None
