"""The partition keys under which pmq's flow control limits pmq-email's mail.

A message goes through two jobs, each with one partition key:
``email-sending`` is partitioned by the sending mailbox (``mailbox:<address>``),
so that a mailbox's daily limit holds it back; ``email-delivery`` by the
recipient's domain (``domain:<domain>``), so that each domain's rate holds
back only mail to that domain. Addresses are lower-cased in keys: a warm-up
plan for ``Sales@Acme.example`` limits mail sent as ``sales@acme.example``.
"""

from __future__ import annotations

from email.utils import parseaddr

from pmq_core import Rate

#: The longest partition key pmq stores, in UTF-8 bytes.
MAX_KEY_BYTES = 200
#: A mailbox's daily limit is a rate over this many seconds: any sliding
#: window of 24 hours, not a calendar day.
DAY = 86400


def mailbox(address: str) -> str:
    """The partition of the mail sent from ``address`` (a bare address, or
    a From line such as ``Team <team@example.org>``)."""
    return f"mailbox:{(parseaddr(address)[1] or address).lower()}"


def domain(recipient: str) -> str:
    """The partition of the deliveries to ``recipient``."""
    return f"domain:{recipient.rpartition('@')[2].lower()}"


def daily(volume: int) -> Rate:
    """A daily limit of ``volume`` messages, as a rate."""
    return Rate(volume, DAY)


def fits(key: str) -> bool:
    """Whether pmq can store ``key`` as a partition."""
    try:
        return "\x00" not in key and len(key.encode("utf-8")) <= MAX_KEY_BYTES
    except UnicodeEncodeError:
        return False
