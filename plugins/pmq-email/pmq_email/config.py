"""pmq-email's configuration: its settings, declared to pmq.

The core's settings say where PostgreSQL and Redis are; these say where mail
goes and where files live. pmq reads them (section ``email``: ``PMQ_EMAIL_*``
variables, ``[tool.pmq.email]`` in pyproject.toml, ``[email]`` in pmq.toml)
and checks them when a worker starts; :class:`EmailConfig` is what the
handlers use, built from them.
"""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from pmq_core import ConfigurationError, Rate

#: The section of the plugin's settings.
SECTION = "email"
SMTP_URL = "smtp_url"
#: The rate of deliveries to each recipient domain unless configured.
DOMAIN_RATE = "10/s"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    value = query.get(name, ["0"])[-1].strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{SMTP_URL}: {name}={value!r} is not a yes/no value (use 1 or 0)")


@attrs.frozen(kw_only=True)
class SmtpServer:
    """Where mail is handed over: host, port, TLS and credentials."""

    host: str = "localhost"
    port: int = 25
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    starttls: bool = False
    implicit_tls: bool = False
    timeout: float = 10.0
    """Seconds per network operation; kept well under the job's 30 s timeout
    so that an attempt ends by itself before the worker gives up on it."""

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """``smtp://user:pass@host:port?starttls=1&timeout=10`` or ``smtps://`` (TLS from the start)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigurationError(f"{SMTP_URL} must start with smtp:// or smtps://, got {parts.scheme!r}")
        if not parts.hostname:
            raise ConfigurationError(f"{SMTP_URL} names no host")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"starttls", "timeout"})
        if unknown:
            raise ConfigurationError(f"{SMTP_URL}: unknown option(s) {', '.join(unknown)}; known: starttls, timeout")
        try:
            port = parts.port
            timeout = float(query.get("timeout", ["10"])[-1])
        except ValueError as exc:
            raise ConfigurationError(f"{SMTP_URL}: {exc}") from None
        if timeout <= 0:
            raise ConfigurationError(f"{SMTP_URL}: timeout must be positive, got {timeout}")
        implicit = parts.scheme == "smtps"
        return cls(host=parts.hostname, port=port or (465 if implicit else 25),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None,
                   starttls=_flag(query, "starttls"), implicit_tls=implicit, timeout=timeout)


def _smtp_url(instance: Any, attribute: Any, url: str | None) -> None:
    """Refuse an SMTP URL that cannot be used, when the settings are read."""
    if url is not None:
        try:
            SmtpServer.from_url(url)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None


def _rate(instance: Any, attribute: Any, text: str) -> None:
    """Refuse a rate that cannot be read, when the settings are read."""
    Rate.parse(text)


@attrs.frozen(kw_only=True)
class EmailSettings:
    """pmq-email's settings, as declared to pmq (``PMQ_EMAIL_<NAME>``)."""

    smtp_url: str | None = attrs.field(default=None, repr=False, metadata={"secret": True}, validator=_smtp_url)
    """``smtp://user:password@host:port?starttls=1&timeout=10``, or ``smtps://``
    for TLS from the first byte; unset: ``smtp://localhost:25``. Secret: it
    may hold a password."""
    sender: str | None = None
    """The From address of sent mail; required to send."""
    templates: Path | None = None
    """Directory of ``<template id>.txt`` files; required to send."""
    inbound_dir: Path | None = None
    """Directory under which inbound messages' storage keys are resolved;
    required to process inbound mail and bounces."""
    message_id_domain: str | None = None
    """Right-hand side of generated Message-IDs (default: the sender's domain)."""
    domain_rate: str = attrs.field(default=DOMAIN_RATE, validator=_rate)
    """Most SMTP deliveries started to one recipient domain, as ``N/PERIOD``
    (``10/s``, ``600/m``): the per-partition rate email-delivery declares."""


@attrs.frozen(kw_only=True)
class EmailConfig:
    """Everything pmq-email needs besides the database."""

    smtp: SmtpServer = attrs.field(factory=SmtpServer)
    sender: str | None = None
    """The From address of sent mail."""
    templates: Path | None = None
    """Directory of ``<template id>.txt`` files."""
    inbound_dir: Path | None = None
    """Directory under which inbound messages' storage keys are resolved."""
    message_id_domain: str | None = None
    """Right-hand side of generated Message-IDs (default: the sender's domain)."""
    domain_rate: Rate = Rate.parse(DOMAIN_RATE)
    """Most SMTP deliveries started to one recipient domain."""

    @classmethod
    def from_settings(cls, settings: EmailSettings) -> EmailConfig:
        smtp = SmtpServer.from_url(settings.smtp_url) if settings.smtp_url else SmtpServer()
        return cls(smtp=smtp, sender=settings.sender, templates=settings.templates,
                   inbound_dir=settings.inbound_dir, message_id_domain=settings.message_id_domain,
                   domain_rate=Rate.parse(settings.domain_rate))

    def require_sender(self) -> str:
        if not self.sender:
            raise ConfigurationError("pmq-email cannot send: set PMQ_EMAIL_SENDER (email.sender) to the "
                                     "From address")
        return self.sender

    def require_templates(self) -> Path:
        if self.templates is None:
            raise ConfigurationError("pmq-email cannot render: set PMQ_EMAIL_TEMPLATES (email.templates) to "
                                     "the templates directory")
        return self.templates

    def require_inbound_dir(self) -> Path:
        if self.inbound_dir is None:
            raise ConfigurationError("pmq-email cannot read inbound mail: set PMQ_EMAIL_INBOUND_DIR "
                                     "(email.inbound_dir) to its directory")
        return self.inbound_dir

    def default_account(self) -> str | None:
        """The mailbox that sends mail whose payload names none: the bare
        address of the configured sender."""
        return parseaddr(self.sender)[1] or None if self.sender else None

    def message_domain(self) -> str:
        if self.message_id_domain:
            return self.message_id_domain
        address = parseaddr(self.require_sender())[1]
        return address.rpartition("@")[2] or "localhost"
