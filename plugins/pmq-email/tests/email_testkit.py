"""Helpers for pmq-email's tests (a module with a name of its own, so that
test files can import it whatever else is collected)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import psycopg
from pmq_email import EmailConfig, EmailPlugin
from psycopg.rows import dict_row

from pmq_core import Job, JobContext
from pmq_core.testing import Runtime, wait_until

DATA = Path(__file__).parent / "data"
SENDER = "PenguinMails <hello@penguinmails.test>"
DOMAIN = "penguinmails.test"

WELCOME = """Subject: Welcome, $name!

Hello $name,

your account $account is ready. This message went to $to.
"""


class SmtpSink:
    """An aiosmtpd handler that keeps what it accepts, and answers with
    scripted replies when told to."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.data_replies: list[str] = []
        self.rcpt_reply: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        self.messages.append(envelope)
        return "250 2.0.0 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def job_type(plugin: EmailPlugin, name: str) -> Any:
    return {jt.name: jt for jt in plugin.pmq_register_job_types()}[name]


def run_job(plugin: EmailPlugin, resources: Mapping[str, Any], name: str, payload: dict[str, Any], *,
            job_id: uuid.UUID | None = None, attempt: int = 1) -> Any:
    """Run a handler once, with ``resources`` (the plugin's database), as
    attempt ``attempt`` of job ``job_id``: what a worker does when it runs a
    job again after a crash or a retry."""
    kind = job_type(plugin, name)
    now = datetime.now(UTC)
    ctx = JobContext(id=job_id or uuid.uuid4(), queue=name, payload=kind.payload(**payload), attempt=attempt,
                     max_attempts=kind.retry.max_attempts, priority=kind.priority, created_at=now, started_at=now,
                     raw_payload=payload, resources=resources)
    return kind.handler(ctx)


def with_smtp(config: EmailConfig, **changes: Any) -> EmailConfig:
    return attrs.evolve(config, smtp=attrs.evolve(config.smtp, **changes))


def delivery_row(settings: Any, sending_job: uuid.UUID) -> dict[str, Any] | None:
    """The delivery an email-sending job recorded (None: none yet)."""
    with psycopg.connect(settings.database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM pmq_email_deliveries WHERE job_id = %s", (sending_job,)).fetchone()


def run_delivery(plugin: EmailPlugin, resources: Mapping[str, Any], settings: Any, sending_job: uuid.UUID, *,
                 attempt: int = 1) -> Any:
    """Run, inline, the email-delivery job that email-sending job
    ``sending_job`` enqueued (as attempt ``attempt``)."""
    row = delivery_row(settings, sending_job)
    assert row is not None and row["delivery_job_id"] is not None, row
    return run_job(plugin, resources, "email-delivery", {"sending_job": str(sending_job)},
                   job_id=row["delivery_job_id"], attempt=attempt)


def delivered(rt: Runtime, sending_job: uuid.UUID, timeout: float = 15.0) -> Job:
    """Wait for an email-sending job and then for the email-delivery job it
    enqueued; the delivery job, finished."""
    rt.wait(sending_job, timeout=timeout)
    row = wait_until(lambda: delivery_row(rt.settings, sending_job), lambda r: r and r["delivery_job_id"], timeout,
                     f"email-sending job {sending_job} recorded no delivery job")
    return rt.wait(row["delivery_job_id"], timeout=timeout)
