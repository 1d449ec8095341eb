"""pmq-email's configuration, read from ``PMQ_*`` environment variables.

The core's settings say where PostgreSQL and Redis are; these say where mail
goes and where files live. They are read when first needed, never on import,
and a bad value is reported by the variable's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from pmq_core import ConfigurationError

SMTP_URL = "PMQ_SMTP_URL"
EMAIL_FROM = "PMQ_EMAIL_FROM"
TEMPLATES = "PMQ_EMAIL_TEMPLATES"
INBOUND_DIR = "PMQ_EMAIL_INBOUND_DIR"
MESSAGE_ID_DOMAIN = "PMQ_EMAIL_MESSAGE_ID_DOMAIN"

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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmailConfig:
        env = os.environ if environ is None else environ
        smtp = SmtpServer.from_url(env[SMTP_URL]) if env.get(SMTP_URL) else SmtpServer()

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(os.path.expanduser(value)) if value else None

        return cls(smtp=smtp, sender=env.get(EMAIL_FROM) or None, templates=path(TEMPLATES),
                   inbound_dir=path(INBOUND_DIR), message_id_domain=env.get(MESSAGE_ID_DOMAIN) or None)

    def require_sender(self) -> str:
        if not self.sender:
            raise ConfigurationError(f"pmq-email cannot send: set {EMAIL_FROM} to the From address")
        return self.sender

    def require_templates(self) -> Path:
        if self.templates is None:
            raise ConfigurationError(f"pmq-email cannot render: set {TEMPLATES} to the templates directory")
        return self.templates

    def require_inbound_dir(self) -> Path:
        if self.inbound_dir is None:
            raise ConfigurationError(f"pmq-email cannot read inbound mail: set {INBOUND_DIR} to its directory")
        return self.inbound_dir

    def message_domain(self) -> str:
        if self.message_id_domain:
            return self.message_id_domain
        address = parseaddr(self.require_sender())[1]
        return address.rpartition("@")[2] or "localhost"
