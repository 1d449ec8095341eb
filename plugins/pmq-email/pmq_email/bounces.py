"""bounce:process: read a delivery status notification (RFC 3464), record
each failed or delayed recipient, mark the original delivery bounced, and
suppress hard-bounced addresses.

A status 5.x.x is a hard bounce (the address will not work), 4.x.x a soft
one (it may work later). The original delivery is found by the
``Original-Message-ID`` field of the report when present, else by the
Message-ID of the returned message or headers.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage, Message
from email.parser import Parser
from email.policy import default
from typing import Any

import attrs

from pmq_core import Fail, JobContext
from pmq_email.config import EmailConfig
from pmq_email.database import Database
from pmq_email.inbound import is_delivery_report, read_message
from pmq_email.payloads import InboundMessage
from pmq_email.queries import q

log = logging.getLogger(__name__)

BOUNCING_ACTIONS = ("failed", "delayed")


@attrs.frozen
class RecipientStatus:
    """One per-recipient block of a report that says the mail did not arrive."""

    recipient: str
    action: str
    status: str
    kind: str
    diagnostic: str | None


@attrs.frozen
class DeliveryReport:
    recipients: list[RecipientStatus]
    original_message_id: str | None


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    return " ".join(str(value).split()) or None if value is not None else None


def _address(typed: str) -> str:
    """``rfc822; user@example.org`` → ``user@example.org``."""
    return typed.partition(";")[2].strip() if ";" in typed else typed.strip()


def _returned_message_id(message: EmailMessage) -> str | None:
    for part in message.iter_parts():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload(0)
            return _field(inner, "Message-ID") if isinstance(inner, Message) else None
        if kind == "text/rfc822-headers":
            headers = Parser(policy=default).parsestr(part.get_content(), headersonly=True)
            return _field(headers, "Message-ID")
    return None


def parse_report(message: EmailMessage) -> DeliveryReport:
    """The bouncing recipients of a report, or Fail when it is not one."""
    if not is_delivery_report(message):
        raise Fail("not a delivery status notification (multipart/report; report-type=delivery-status)")
    status_part = next((p for p in message.iter_parts() if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        raise Fail("the report has no message/delivery-status part")
    original = None
    recipients = []
    for block in status_part.get_payload():
        if not isinstance(block, Message):
            continue
        final = _field(block, "Final-Recipient") or _field(block, "Original-Recipient")
        if final is None:
            original = original or _field(block, "Original-Message-ID")
            continue
        action = (_field(block, "Action") or "").lower()
        status = (_field(block, "Status") or "").split(" ")[0]
        kind = {"5": "hard", "4": "soft"}.get(status[:1])
        if action in BOUNCING_ACTIONS and kind is not None:
            recipients.append(RecipientStatus(_address(final), action, status, kind,
                                              _field(block, "Diagnostic-Code")))
    return DeliveryReport(recipients, original or _returned_message_id(message))


def process_bounce(job: JobContext, config: EmailConfig, db: Database) -> dict[str, Any]:
    """The bounce:process handler; running it again for one report changes nothing."""
    payload: InboundMessage = job.payload
    _, message = read_message(config, payload.key)
    report = parse_report(message)
    delivery_job = None
    with db.connection() as conn, conn.transaction():
        delivery = None
        if report.original_message_id:
            delivery = conn.execute(q("delivery_by_message_id"),
                                    {"message_id": report.original_message_id}).fetchone()
        delivery_job = delivery["job_id"] if delivery else None
        for item in report.recipients:
            conn.execute(q("insert_bounce"), {
                "storage_key": payload.key, "recipient": item.recipient, "kind": item.kind, "status": item.status,
                "action": item.action, "diagnostic": item.diagnostic,
                "original_message_id": report.original_message_id, "delivery_job_id": delivery_job})
            if item.kind == "hard":
                conn.execute(q("suppress_address"), {
                    "address": item.recipient, "reason": f"hard bounce {item.status}",
                    "source": report.original_message_id or payload.key})
        if delivery is not None and report.recipients:
            matching = [r for r in report.recipients if r.recipient.lower() == delivery["recipient"].lower()]
            worst = min(matching or report.recipients, key=lambda r: r.kind != "hard")
            conn.execute(q("mark_bounced"), {"job_id": delivery_job, "kind": worst.kind, "status": worst.status})
    hard = [r.recipient for r in report.recipients if r.kind == "hard"]
    soft = [r.recipient for r in report.recipients if r.kind == "soft"]
    if hard:
        log.info("bounce:process %s: suppressed %s (hard bounce)", job.id, ", ".join(hard))
    return {"key": payload.key, "hard": hard, "soft": soft, "original_message_id": report.original_message_id,
            "delivery_job_id": str(delivery_job) if delivery_job else None}
