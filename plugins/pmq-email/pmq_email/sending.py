"""email-sending: render a template and send it, at most once per job.

What a crash can do, and what pmq-email guarantees:

1. The delivery row is written as ``sending`` (committed) before the SMTP
   conversation starts, and as ``sent`` after the server accepted the
   message. Its Message-ID is derived from the job id, so every attempt of
   one job produces the same message.
2. An attempt that finds ``sent`` returns at once: a job that runs again
   after a crash following a successful send does not send twice.
3. An attempt that finds ``sending`` cannot tell "crashed before the server
   took the message" from "crashed after": it marks the delivery
   ``unknown`` and fails the job without sending (at most once, never
   twice). The same holds when the connection breaks while the message is
   being transmitted. An operator who decides to resend enqueues a new job.
4. A 4xx reply or a network failure before the message was transmitted
   leaves ``deferred`` and retries with backoff; a 5xx reply leaves
   ``failed`` and fails the job at once.

A crash before ``sending`` is committed leaves nothing behind, and the
next attempt sends normally.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Any

from pmq_core import ConfigurationError, Fail, JobContext, Retry
from pmq_email import smtp
from pmq_email.config import EmailConfig
from pmq_email.database import Database
from pmq_email.payloads import SendEmail
from pmq_email.queries import q
from pmq_email.templates import render

log = logging.getLogger(__name__)


def message_id_for(job_id: Any, domain: str) -> str:
    """The Message-ID of the mail a job sends: the same on every attempt."""
    return f"<{job_id}@{domain}>"


def build_message(*, sender: str, to: str, subject: str, body: str, message_id: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message.set_content(body)
    return message.as_bytes(policy=SMTP)


def _claim(db: Database, job: JobContext, message_id: str, status: str) -> dict[str, Any] | None:
    """Record this attempt as ``status``: None when an earlier attempt left a
    row that must not be overwritten (its row is returned instead)."""
    payload: SendEmail = job.payload
    with db.connection() as conn:
        row = conn.execute(q("claim_delivery"), {
            "job_id": job.id, "message_id": message_id, "recipient": payload.to,
            "template": payload.template, "status": status, "attempt": job.attempt}).fetchone()
        if row is not None:
            return None
        return conn.execute(q("delivery_by_job"), {"job_id": job.id}).fetchone()


def _finish(db: Database, job: JobContext, status: str, reply: str | None) -> None:
    with db.connection() as conn:
        conn.execute(q("finish_delivery"), {"job_id": job.id, "status": status, "reply": reply})


def _earlier(job: JobContext, db: Database, row: dict[str, Any]) -> dict[str, Any]:
    """What to do when an earlier attempt of this job left a delivery row."""
    status = row["status"]
    if status in ("sent", "bounced", "suppressed"):
        log.info("email-sending %s: already %s earlier (Message-ID %s); not sending again",
                 job.id, status, row["message_id"])
        return {"status": status, "message_id": row["message_id"], "already": True}
    if status in ("sending", "unknown"):
        _finish(db, job, "unknown", row["smtp_reply"])
        raise Fail(f"an earlier attempt stopped while sending Message-ID {row['message_id']}; it may have "
                   "been delivered, so it is not sent again (enqueue a new job to resend)")
    raise Fail(f"this job's delivery already failed for good: {row['smtp_reply']}")


def send_email(job: JobContext, config: EmailConfig, db: Database) -> dict[str, Any]:
    """The email-sending handler."""
    payload: SendEmail = job.payload
    try:
        sender = config.require_sender()
        message_id = message_id_for(job.id, config.message_domain())
        templates = config.require_templates()
    except ConfigurationError as exc:
        raise Fail(str(exc)) from None
    with db.connection() as conn:
        suppressed = conn.execute(q("is_suppressed"), {"address": payload.to}).fetchone()
    if suppressed is not None:
        earlier = _claim(db, job, message_id, "suppressed")
        if earlier is not None and earlier["status"] != "suppressed":
            return _earlier(job, db, earlier)
        log.info("email-sending %s: %s is on the suppression list; skipped", job.id, payload.to)
        return {"status": "suppressed", "recipient": payload.to}
    rendered = render(templates, payload.template, {**payload.values, "to": payload.to})
    message = build_message(sender=sender, to=payload.to, subject=rendered.subject, body=rendered.body,
                            message_id=message_id)
    earlier = _claim(db, job, message_id, "sending")
    if earlier is not None:
        return _earlier(job, db, earlier)
    try:
        reply = smtp.send(config.smtp, parseaddr(sender)[1], payload.to, message)
    except smtp.Deferred as exc:
        _finish(db, job, "failed" if job.is_last_attempt else "deferred", str(exc))
        raise Retry(f"SMTP deferred: {exc}") from None
    except smtp.Rejected as exc:
        _finish(db, job, "failed", str(exc))
        raise Fail(f"SMTP rejected: {exc}") from None
    except smtp.Uncertain as exc:
        _finish(db, job, "unknown", str(exc))
        raise Fail(f"{exc}; it may have been delivered, so it is not sent again") from None
    _finish(db, job, "sent", reply)
    log.info("email-sending %s: sent %s to %s (%s)", job.id, message_id, payload.to, reply)
    return {"status": "sent", "message_id": message_id, "recipient": payload.to, "reply": reply}
