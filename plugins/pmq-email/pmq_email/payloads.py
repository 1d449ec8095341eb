"""The payloads of pmq-email's job types: ids, addresses and small values
only, never message bodies or secrets."""

from __future__ import annotations

import re
import uuid
from email.utils import parseaddr
from typing import Any

import attrs

from pmq_email import partitions

#: The largest daily volume of a warm-up plan (pmq's largest rate).
MAX_DAILY = 2**31 - 1
#: A template id names a file in the templates directory, so it cannot hold a path.
TEMPLATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _address(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    name, address = parseaddr(value)
    if not address or address != value.strip() or "@" not in address or any(c.isspace() for c in address):
        raise ValueError(f"{attribute.name} must be a bare email address like user@example.com, got {value!r}")


def _recipient(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    _address(instance, attribute, value)
    if not partitions.fits(partitions.domain(value)):
        raise ValueError(f"{attribute.name}'s domain is too long to be a partition key "
                         f"(at most {partitions.MAX_KEY_BYTES} bytes with 'domain:')")


def _mailbox(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    _address(instance, attribute, value)
    if not partitions.fits(partitions.mailbox(value)):
        raise ValueError(f"{attribute.name} is too long to be a partition key "
                         f"(at most {partitions.MAX_KEY_BYTES} bytes with 'mailbox:')")


def _template_id(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not TEMPLATE_ID.fullmatch(value) or ".." in value:
        raise ValueError(f"template must be a template id (letters, digits, '_.-'), got {value!r}")


def _storage_key(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or "\x00" in value:
        raise ValueError(f"key must be a non-empty storage key, got {value!r}")


@attrs.frozen(kw_only=True)
class SendEmail:
    """email-sending: render ``template`` with ``values`` and send it to
    ``to`` from the mailbox ``account`` (None: the configured sender)."""

    to: str = attrs.field(validator=_recipient)
    template: str = attrs.field(validator=_template_id)
    values: dict[str, str] = attrs.field(factory=dict)
    account: str | None = attrs.field(default=None, validator=_mailbox)


def _job_id(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError:
        raise ValueError(f"{attribute.name} must be a job id (a UUID), got {value!r}") from None


@attrs.frozen(kw_only=True)
class DeliverEmail:
    """email-delivery: send the message that email-sending job
    ``sending_job`` rendered and recorded (only ids: the message is in
    ``pmq_email_deliveries``)."""

    sending_job: str = attrs.field(validator=_job_id)


@attrs.frozen(kw_only=True)
class InboundMessage:
    """email-processing and bounce:process: the raw message stored under
    ``key`` (relative to the inbound directory)."""

    key: str = attrs.field(validator=_storage_key)


@attrs.frozen(kw_only=True)
class WarmupStep:
    """warmup:process: day ``day`` of the plan of the mailbox ``account``
    (its address), whose daily volume is ``min(target, ceil(start *
    growth**day))``; the next day's step runs ``every_seconds`` later, until
    the volume reaches ``target``."""

    account: str = attrs.field(validator=_mailbox)
    start: int = attrs.field(validator=attrs.validators.ge(1))
    target: int = attrs.field()
    growth: float = attrs.field(validator=attrs.validators.gt(1.0))
    day: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    every_seconds: float = attrs.field(default=86400.0, validator=attrs.validators.ge(0))

    @target.validator
    def _check_target(self, attribute: attrs.Attribute[Any], value: int) -> None:
        if value < self.start:
            raise ValueError(f"target ({value}) must be at least start ({self.start})")
        if value > MAX_DAILY:
            raise ValueError(f"target ({value}) must be at most {MAX_DAILY} messages a day")
