"""The records pmq reads back and what a handler sees: a job's row, the
running job, and the resources its worker's plugins share with it."""

from __future__ import annotations

import enum
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from pmq_core import payloads
from pmq_core.errors import shown
from pmq_core.headers import NO_HEADERS, from_stored
from pmq_core.payloads import UnreadablePayload

if TYPE_CHECKING:
    from pmq_core.config import Settings


class Resources(Mapping[str, Any]):
    """A read-only mapping of resource names to objects; a name no plugin
    provides is a KeyError that lists the names there are."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values = dict(values or {})

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            have = ", ".join(repr(n) for n in sorted(self._values)) or "none"
            raise KeyError(f"no job resource {shown(name)} (this process has: {have}); resources come from "
                           "plugins' pmq_worker_resources hook, and one that failed is named in the worker's "
                           "log") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Resources({sorted(self._values)!r})"


class JobStatus(enum.StrEnum):
    """The states of ``jobs.status`` (a contract: other programs read them)."""

    QUEUED = "queued"
    MIGRATED_TO_REDIS = "migrated_to_redis"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class LogStatus(enum.StrEnum):
    """How one attempt ended, as ``job_logs.status`` records it (a contract
    too; the schema also admits ``attempting``, which pmq never writes)."""

    SUCCESS = "success"
    RETRY = "retry"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class Job:
    """One row of ``jobs``, as read back. ``payload`` is an
    :class:`~pmq_core.payloads.UnreadablePayload` when Python cannot decode
    the stored value (such a job ends dead when a worker claims it)."""

    id: uuid.UUID
    queue_name: str
    status: JobStatus
    priority: int
    payload: dict[str, Any] | UnreadablePayload
    attempt_count: int
    max_attempts: int
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    last_error_message: str | None
    created_at: datetime
    updated_at: datetime
    worker_id: uuid.UUID | None = None
    unique_key: str | None = None
    #: None for the queue's default partition.
    partition_key: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        fields = {a.name for a in attrs.fields(cls)}
        data = {k: v for k, v in row.items() if k in fields}
        data["status"] = JobStatus(data["status"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (ids and times as strings)."""
        out: dict[str, Any] = {}
        for key, value in attrs.asdict(self, recurse=False).items():
            if isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, (JobStatus, UnreadablePayload)):
                value = str(value)
            out[key] = value
        return out


@attrs.define(kw_only=True, eq=False)
class JobContext:
    """The running job, as its handler sees it.

    ``payload`` is an instance of the job type's payload class when it
    declares one, else the dict. ``attempt`` counts from 1; ``started_at`` is
    when this attempt's handler started. A sync handler that may run long
    should check :attr:`cancelled` now and then: it is set when an operator
    cancels the job, its timeout passes or its worker stops. An async
    handler is cancelled outright.

    ``settings`` are the worker's (its ``database_url``, say), and
    ``resources`` what the plugins' ``pmq_worker_resources`` hooks provide
    for handlers to share (a connection pool, a client): read them here
    rather than from module globals. Outside a worker both are what the
    caller gives (``run_inline(..., settings=..., resources=...)``).

    ``headers`` are the text entries plugins stored beside the payload when
    the job was enqueued (``pmq_wrap_enqueue``: W3C trace context, say),
    read-only; empty for a job enqueued without any, and whatever a program
    stored there by plain SQL that is not a text entry is left out.
    """

    id: uuid.UUID
    queue: str
    payload: Any
    attempt: int
    max_attempts: int
    priority: int
    created_at: datetime
    started_at: datetime
    raw_payload: dict[str, Any] | UnreadablePayload
    settings: Settings | None = None
    resources: Resources = attrs.field(factory=Resources, converter=Resources)
    headers: Mapping[str, str] = attrs.field(default=NO_HEADERS, converter=from_stored)
    #: When this attempt was due (``jobs.run_at`` as claimed): its wait for a
    #: worker is ``started_at - run_at``. None outside a worker's run.
    run_at: datetime | None = None
    #: The job's partition key (given at enqueue, by the job type's rule, or
    #: by a plain-SQL producer); None for the queue's default partition.
    partition: str | None = None
    _cancel_event: threading.Event = attrs.field(factory=threading.Event, alias="cancel_event")
    _stop_reason: str | None = attrs.field(default=None, init=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], payload_class: type | None) -> JobContext:
        """A job that ended dead outside a run (a rescue, or a row pmq could
        not move, claim or record), as ``pmq_job_dead`` sees it: its payload
        structured into ``payload_class`` when it fits, else the stored value
        (the hook still learns of the death)."""
        stored = row["payload"]
        try:
            payload = payloads.structure(stored, payload_class)
        except Exception:
            payload = stored
        return cls(id=row["id"], queue=row["queue_name"], payload=payload, attempt=row["attempt_count"],
                   max_attempts=row["max_attempts"], priority=row["priority"], created_at=row["created_at"],
                   started_at=row["started_at"] or row["created_at"], raw_payload=stored,
                   partition=row.get("partition_key"))

    @property
    def cancelled(self) -> bool:
        """True once the job should stop (cancelled, timed out or shutting down hard)."""
        return self._cancel_event.is_set()

    @property
    def stop_reason(self) -> str | None:
        """Why the job was told to stop: ``"cancelled"`` (by an operator),
        ``"timeout"`` or ``"shutdown"`` (its worker stopped and gives it
        back); None while it was not. A ``pmq_wrap_job`` wrapper that sees
        ``asyncio.CancelledError`` reads here which it was."""
        return self._stop_reason

    def cancel(self, reason: str = "cancelled") -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self._cancel_event.set()

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


def new_job_ids(count: int) -> list[uuid.UUID]:
    """``count`` fresh job ids, time-ordered (UUID version 7, RFC 9562: Unix
    milliseconds, then random bits), so that the primary key's index grows at
    its right edge instead of at random pages as the table gets large."""
    millis = (time.time_ns() // 1_000_000).to_bytes(6, "big")
    randomness = os.urandom(10 * count)
    ids = []
    for offset in range(0, 10 * count, 10):
        raw = bytearray(millis)
        raw += randomness[offset:offset + 10]
        raw[6] = 0x70 | raw[6] & 0x0F  # version 7
        raw[8] = 0x80 | raw[8] & 0x3F  # the RFC's variant
        ids.append(uuid.UUID(bytes=bytes(raw)))
    return ids


def parse_job_id(value: uuid.UUID | str) -> uuid.UUID:
    """A job id from its text, or JobNotFoundError when it is not a UUID."""
    from pmq_core.errors import JobNotFoundError, shown

    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise JobNotFoundError(f"{shown(value)} is not a job id (a UUID)") from None
