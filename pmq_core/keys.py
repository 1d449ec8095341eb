"""Every Redis key pmq uses, and the message format, in one place, so the
on-Redis format is visible at a glance.

All keys start with the configured prefix (default ``pmq:``), so that several
deployments can share one Redis. Every key of a queue, its jobs' status
hashes included, holds the queue's name in braces (``{name}``): they set it
apart from the prefix and the suffix, and are the hash tag that puts all of
one queue's keys in one Redis Cluster slot.

======================  =====================================================
``P{q}:high``           list of messages, priority <= 50
``P{q}``                list of messages, priority 51-150
``P{q}:low``            list of messages, priority > 150
``P{q}:dead``           list of dead job ids, newest first: pushed when a job
                        dies, removed when it is replayed or purged (for
                        tools that read Redis; pmq reads PostgreSQL).
                        Retention does not trim it yet.
``P{q}:job:<id>``      hash mirroring a live job's status, for real-time
                        views; expires an hour after the job finishes (none
                        with the ``status_mirror`` setting off)
``Pcancel``             pub/sub channel: ids of running jobs to stop
``Ppause``              pub/sub channel: names of queues just paused, whose
                        jobs claimed ahead workers give back
``Pheld``               hash, queue name to the keys its limits hold back
                        (JSON, see ``flow.py``), written by the leading
                        migrator for ``pmq stats``; rebuilt after a wipe
======================  =====================================================

A message is ``<job id>:<attempt count>``: a hint that the job is ready, never
trusted on its own (workers claim it in PostgreSQL first).

The hash-slot rule, which makes pmq run on a Redis Cluster: a script or a
multi-key command only ever takes keys of one queue (see
:func:`pmq_core.dispatch.by_queue`), and channels are not keys. A worker
serving queues in several slots pops each slot's queues apart (see
:mod:`pmq_core.popping`).
"""

from __future__ import annotations

import uuid

from pmq_core.limits import INT32

#: A queue's bands, most urgent first: the order in which workers pop them.
BANDS = ("high", "normal", "low")
HIGH, NORMAL, LOW = BANDS

#: How long a finished job's status hash stays readable.
FINISHED_JOB_TTL = 3600


class Keys:
    """The Redis key names under one prefix; ``status_hashes`` says whether
    the deployment keeps the jobs' status hashes (the ``status_mirror``
    setting)."""

    def __init__(self, prefix: str, *, status_hashes: bool = True) -> None:
        self.prefix = prefix
        self.status_hashes = status_hashes
        self.cancel_channel = f"{prefix}cancel"
        self.pause_channel = f"{prefix}pause"
        self.held = f"{prefix}held"

    def band(self, queue: str, band: str) -> str:
        base = f"{self.prefix}{{{queue}}}"
        return base if band == NORMAL else f"{base}:{band}"

    def bands(self, queue: str) -> list[str]:
        """The queue's three lists, most urgent first."""
        return [self.band(queue, band) for band in BANDS]

    def dead(self, queue: str) -> str:
        return f"{self.prefix}{{{queue}}}:dead"

    def job(self, queue: str, job_id: uuid.UUID | str) -> str:
        return f"{self.prefix}{{{queue}}}:job:{job_id}"


def message(job_id: uuid.UUID | str, attempt: int) -> str:
    return f"{job_id}:{attempt}"


def parse_message(raw: bytes | str) -> tuple[uuid.UUID, int] | None:
    """The job id and attempt a message names, or None when it is malformed
    (a forged or corrupt message is dropped, never run). An attempt outside
    PostgreSQL's integer range is malformed too: sent with the other popped
    messages, it would make the worker's whole claim statement fail."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    job_id, _, attempt = text.partition(":")
    if not attempt.isascii() or not attempt.isdigit() or len(attempt) > 10:
        return None
    try:
        parsed = uuid.UUID(job_id), int(attempt)
    except ValueError:
        return None
    return parsed if parsed[1] <= INT32 else None
