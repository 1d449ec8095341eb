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
from pmq_email import EmailConfig, EmailPlugin

from pmq_core import JobContext

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
