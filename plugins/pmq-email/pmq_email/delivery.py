"""email-delivery: send a message email-sending recorded, at most once.

The job runs in its recipient domain's partition, so that domain's rate
holds it back (see :mod:`pmq_email.partitions`). Its payload names the
email-sending job; the message, its sender and its recipient are that
job's row in ``pmq_email_deliveries``, which only the email-delivery job
recorded there may act on.

What a crash can do, and what pmq-email guarantees:

1. The row is written as ``sending`` (committed) before the SMTP
   conversation starts, and as ``sent`` after the server accepted the
   message. Its Message-ID is derived from the email-sending job's id, and
   its content was rendered once, so every attempt sends the same message.
2. An attempt that finds ``sent`` returns at once: a job that runs again
   after a crash following a successful send does not send twice.
3. An attempt that finds ``sending`` cannot tell "crashed before the server
   took the message" from "crashed after": it marks the delivery
   ``unknown`` and fails the job without sending (at most once, never
   twice). The same holds when the connection breaks while the message is
   being transmitted. An operator who decides to resend enqueues a new
   email-sending job.
4. A 4xx reply or a network failure before the message was transmitted
   leaves ``deferred`` and retries with backoff; a 5xx reply leaves
   ``failed`` and fails the job at once.

A crash before ``sending`` is committed leaves the row as it was, and the
next attempt sends normally.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pmq_core import Fail, JobContext, Retry
from pmq_email import smtp
from pmq_email.config import EmailConfig
from pmq_email.database import Database
from pmq_email.payloads import DeliverEmail
from pmq_email.queries import q

log = logging.getLogger(__name__)

DELIVERY_QUEUE = "email-delivery"


def _finish(db: Database, key: Any, status: str, reply: str | None) -> None:
    with db.connection() as conn:
        conn.execute(q("finish_delivery"), {"job_id": key, "status": status, "reply": reply})


def earlier(who: str, db: Database, row: dict[str, Any]) -> dict[str, Any]:
    """What to do when an earlier attempt left ``row`` in a state this one
    may not send from."""
    status = row["status"]
    if status in ("sent", "bounced", "suppressed"):
        log.info("%s: already %s earlier (Message-ID %s); not sending again", who, status, row["message_id"])
        return {"status": status, "message_id": row["message_id"], "already": True}
    if status in ("sending", "unknown"):
        _finish(db, row["job_id"], "unknown", row["smtp_reply"])
        raise Fail(f"an earlier attempt stopped while sending Message-ID {row['message_id']}; it may have "
                   "been delivered, so it is not sent again (enqueue a new email-sending job to resend)")
    raise Fail(f"this delivery already failed for good: {row['smtp_reply']}")


def _claim(db: Database, job: JobContext, key: uuid.UUID, status: str) -> dict[str, Any] | None:
    """Record this attempt as ``status``: the row, or None when an earlier
    attempt left one this attempt may not take over."""
    with db.connection() as conn:
        row: dict[str, Any] | None = conn.execute(q("claim_delivery"), {
            "job_id": key, "delivery_job_id": job.id, "status": status, "attempt": job.attempt}).fetchone()
    return row


def _not_claimed(job: JobContext, db: Database, key: uuid.UUID) -> dict[str, Any]:
    with db.connection() as conn:
        row = conn.execute(q("delivery_by_job"), {"job_id": key}).fetchone()
    if row is None:
        raise Fail(f"email-sending job {key} recorded no delivery; nothing to send")
    if row["delivery_job_id"] != job.id:
        raise Fail(f"the delivery of email-sending job {key} belongs to email-delivery job "
                   f"{row['delivery_job_id']}, not to this one; nothing sent")
    return earlier(f"email-delivery {job.id}", db, row)


def deliver_email(job: JobContext, config: EmailConfig, db: Database) -> dict[str, Any]:
    """The email-delivery handler."""
    payload: DeliverEmail = job.payload
    key = uuid.UUID(payload.sending_job)
    with db.connection() as conn:
        row = conn.execute(q("delivery_by_job"), {"job_id": key}).fetchone()
        suppressed = row is not None and conn.execute(q("is_suppressed"), {"address": row["recipient"]}
                                                      ).fetchone() is not None
    if row is not None and suppressed:  # it bounced for good since the message was queued
        if _claim(db, job, key, "suppressed") is None:
            return _not_claimed(job, db, key)
        log.info("email-delivery %s: %s is on the suppression list; skipped", job.id, row["recipient"])
        return {"status": "suppressed", "recipient": row["recipient"]}
    claimed = _claim(db, job, key, "sending")
    if claimed is None:
        return _not_claimed(job, db, key)
    message_id, recipient = claimed["message_id"], claimed["recipient"]
    if claimed["content"] is None or not claimed["account"]:  # a row written by hand
        _finish(db, key, "failed", "no message or sender recorded")
        raise Fail(f"the delivery of email-sending job {key} records no message or sender; nothing sent")
    try:
        reply = smtp.send(config.smtp, claimed["account"], recipient, bytes(claimed["content"]))
    except smtp.Deferred as exc:
        _finish(db, key, "failed" if job.is_last_attempt else "deferred", str(exc))
        raise Retry(f"SMTP deferred: {exc}") from None
    except smtp.Rejected as exc:
        _finish(db, key, "failed", str(exc))
        raise Fail(f"SMTP rejected: {exc}") from None
    except smtp.Uncertain as exc:
        _finish(db, key, "unknown", str(exc))
        raise Fail(f"{exc}; it may have been delivered, so it is not sent again") from None
    _finish(db, key, "sent", reply)
    log.info("email-delivery %s: sent %s to %s (%s)", job.id, message_id, recipient, reply)
    return {"status": "sent", "message_id": message_id, "recipient": recipient, "reply": reply}
