"""email-sending: render a message and hand it to email-delivery.

A message goes through two jobs because pmq's flow control gives a job one
partition, and two limits apply to a message: its sending mailbox's daily
limit and its recipient domain's rate. email-sending runs in the mailbox's
partition (see :mod:`pmq_email.partitions`): once the mailbox's limit lets
it start, it renders the message, records it in ``pmq_email_deliveries``
(``queued``) and enqueues the email-delivery job, which runs in the
domain's partition and does the SMTP conversation (:mod:`pmq_email.delivery`).
The record and the enqueue share one transaction, so a job that runs
again finds its record and enqueues nothing more.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Any

from pmq_core import ConfigurationError, Fail, JobContext
from pmq_email import partitions
from pmq_email.config import EmailConfig
from pmq_email.database import Database
from pmq_email.delivery import DELIVERY_QUEUE, earlier
from pmq_email.payloads import DeliverEmail, SendEmail
from pmq_email.queries import q
from pmq_email.templates import render

log = logging.getLogger(__name__)

SENDING_QUEUE = "email-sending"


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


def _record(db: Database, job: JobContext, record: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Record the delivery (and, unless it is suppressed, enqueue its
    email-delivery job) in one transaction: (True, the new row), or
    (False, the row an earlier attempt recorded)."""
    payload: SendEmail = job.payload
    with db.connection() as conn, conn.transaction():
        inserted = conn.execute(q("record_delivery"), record).fetchone()
        if inserted is not None and record["status"] == "queued":
            delivery_job = db.client.enqueue(DELIVERY_QUEUE, DeliverEmail(sending_job=str(job.id)), conn=conn,
                                             partition=partitions.domain(payload.to),
                                             unique_key=f"{DELIVERY_QUEUE}:{job.id}")
            conn.execute(q("set_delivery_job"), {"job_id": job.id, "delivery_job_id": delivery_job})
        row = conn.execute(q("delivery_by_job"), {"job_id": job.id}).fetchone()
    assert row is not None
    return inserted is not None, row


def _already(job: JobContext, db: Database, row: dict[str, Any]) -> dict[str, Any]:
    """What an earlier attempt of this job recorded."""
    if row["delivery_job_id"] is None:  # suppressed, or recorded by version 1, which sent in this job
        return earlier(f"email-sending {job.id}", db, row)
    return {"status": row["status"], "message_id": row["message_id"],
            "delivery_job_id": str(row["delivery_job_id"]), "already": True}


def send_email(job: JobContext, config: EmailConfig, db: Database) -> dict[str, Any]:
    """The email-sending handler."""
    payload: SendEmail = job.payload
    try:
        sender = payload.account or config.require_sender()
        message_id = message_id_for(job.id, config.message_domain())
        templates = config.require_templates()
    except ConfigurationError as exc:
        raise Fail(str(exc)) from None
    record = {"job_id": job.id, "message_id": message_id, "recipient": payload.to, "template": payload.template,
              "attempt": job.attempt, "account": parseaddr(sender)[1], "content": None}
    with db.connection() as conn:
        suppressed = conn.execute(q("is_suppressed"), {"address": payload.to}).fetchone()
    if suppressed is not None:
        new, row = _record(db, job, {**record, "status": "suppressed"})
        if not new:
            return _already(job, db, row)
        log.info("email-sending %s: %s is on the suppression list; skipped", job.id, payload.to)
        return {"status": "suppressed", "recipient": payload.to}
    rendered = render(templates, payload.template, {**payload.values, "to": payload.to})
    content = build_message(sender=sender, to=payload.to, subject=rendered.subject, body=rendered.body,
                            message_id=message_id)
    new, row = _record(db, job, {**record, "status": "queued", "content": content})
    if not new:
        return _already(job, db, row)
    log.info("email-sending %s: %s to %s queued for delivery (job %s)", job.id, message_id, payload.to,
             row["delivery_job_id"])
    return {"status": "queued", "message_id": message_id, "recipient": payload.to,
            "delivery_job_id": str(row["delivery_job_id"])}
