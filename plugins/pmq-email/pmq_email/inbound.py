"""email-processing: read a stored inbound message, record what it is, and
hand delivery status notifications on to bounce:process."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

from pmq_core import ConfigurationError, Fail, JobContext
from pmq_email.config import EmailConfig
from pmq_email.database import Database
from pmq_email.payloads import InboundMessage
from pmq_email.queries import q

log = logging.getLogger(__name__)

BOUNCE_QUEUE = "bounce:process"


def resolve_key(inbound_dir: Path, key: str) -> Path:
    """The file a storage key names; Fail for a key that leaves the inbound
    directory (``..``, an absolute path, or a symlink pointing out)."""
    root = inbound_dir.resolve()
    candidate = (root / key).resolve()
    if Path(key).is_absolute() or candidate == root or not candidate.is_relative_to(root):
        raise Fail(f"storage key {key!r} points outside the inbound directory; refused")
    return candidate


def read_message(config: EmailConfig, key: str) -> tuple[bytes, EmailMessage]:
    """The raw bytes stored under ``key`` and the message they parse into."""
    try:
        inbound_dir = config.require_inbound_dir()
    except ConfigurationError as exc:
        raise Fail(str(exc)) from None
    path = resolve_key(inbound_dir, key)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise Fail(f"no inbound message is stored under {key!r}") from None
    message = BytesParser(policy=default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return raw, message


def is_delivery_report(message: EmailMessage) -> bool:
    """True for an RFC 3464 delivery status notification."""
    return (message.get_content_type() == "multipart/report"
            and str(message.get_param("report-type", "")).lower() == "delivery-status")


def _header(message: EmailMessage, name: str) -> str | None:
    value = message.get(name)
    return str(value).strip() or None if value is not None else None


def summarise(raw: bytes, message: EmailMessage) -> dict[str, Any]:
    """Sender, recipients, subject, Message-ID and size of a message."""
    sender = parseaddr(_header(message, "From") or "")[1] or None
    fields = [str(v) for name in ("To", "Cc") for v in message.get_all(name, [])]
    recipients = [address for _, address in getaddresses(fields) if address]
    return {"message_id": _header(message, "Message-ID"), "sender": sender, "recipients": recipients,
            "subject": _header(message, "Subject"), "size_bytes": len(raw),
            "is_bounce_report": is_delivery_report(message)}


def process_inbound(job: JobContext, config: EmailConfig, db: Database) -> dict[str, Any]:
    """The email-processing handler. Recording the message and enqueueing its
    bounce:process job happen in one transaction, once per storage key."""
    payload: InboundMessage = job.payload
    raw, message = read_message(config, payload.key)
    summary = summarise(raw, message)
    with db.connection() as conn, conn.transaction():
        inserted = conn.execute(q("insert_inbound"), {"storage_key": payload.key, "job_id": job.id, **summary}
                                ).fetchone()
        if inserted is None:
            earlier = conn.execute(q("inbound_by_key"), {"storage_key": payload.key}).fetchone()
            assert earlier is not None
            log.info("email-processing %s: %r was already processed", job.id, payload.key)
            bounce_job = earlier["bounce_job_id"]
        elif summary["is_bounce_report"]:
            bounce_job = db.client.enqueue(BOUNCE_QUEUE, InboundMessage(key=payload.key), conn=conn)
            conn.execute(q("set_inbound_bounce_job"), {"storage_key": payload.key, "bounce_job_id": bounce_job})
        else:
            bounce_job = None
    return {**summary, "key": payload.key, "bounce_job_id": str(bounce_job) if bounce_job else None,
            "already": inserted is None}
