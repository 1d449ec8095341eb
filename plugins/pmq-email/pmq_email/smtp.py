"""Handing one message to an SMTP server, and saying what became of it.

The outcome is one of three: accepted (a reply string is returned), not
accepted (``Deferred`` for 4xx replies and network failures before the
message was transmitted; ``Rejected`` for 5xx replies), or ``Uncertain``:
the connection broke while the message itself was being transmitted, so
the server may or may not have taken it.
"""

from __future__ import annotations

import smtplib
import ssl

from pmq_email.config import SmtpServer


class Deferred(Exception):
    """The server did not take the message, for now: try again later."""


class Rejected(Exception):
    """The server refused the message for good (a 5xx reply or a
    configuration it does not support)."""


class Uncertain(Exception):
    """The connection broke after the message was transmitted, before the
    server's verdict: it may have been accepted."""


def _verdict(code: int, text: bytes | str, stage: str) -> Exception:
    reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    message = f"{stage}: {code} {reply}".strip()
    return Rejected(message) if 500 <= code <= 599 else Deferred(message)


def _connect(server: SmtpServer) -> smtplib.SMTP:
    if server.implicit_tls:
        return smtplib.SMTP_SSL(server.host, server.port, timeout=server.timeout,
                                context=ssl.create_default_context())
    return smtplib.SMTP(server.host, server.port, timeout=server.timeout)


def _close(smtp: smtplib.SMTP) -> None:
    """Say goodbye politely if the server listens; a failed QUIT changes nothing."""
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def send(server: SmtpServer, sender: str, recipient: str, message: bytes) -> str:
    """Send ``message`` from ``sender`` to ``recipient``; the server's final
    reply, or one of Deferred, Rejected and Uncertain."""
    try:
        smtp = _connect(server)
    except smtplib.SMTPResponseException as exc:
        raise _verdict(exc.smtp_code, exc.smtp_error, "connect") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise Deferred(f"cannot reach {server.host}:{server.port}: {exc}") from None
    try:
        try:
            smtp.ehlo_or_helo_if_needed()
            if server.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if server.username:
                smtp.login(server.username, server.password or "")
            code, text = smtp.mail(sender)
            if code != 250:
                raise _verdict(code, text, "MAIL FROM")
            code, text = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise _verdict(code, text, "RCPT TO")
        except smtplib.SMTPNotSupportedError as exc:
            raise Rejected(f"the server does not support what {server.host} is configured for: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            raise _verdict(exc.smtp_code, exc.smtp_error, "session") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise Deferred(f"connection to {server.host}:{server.port} failed: {exc}") from None
        try:
            code, text = smtp.data(message)
        except smtplib.SMTPDataError as exc:  # DATA itself refused: nothing was transmitted
            raise _verdict(exc.smtp_code, exc.smtp_error, "DATA") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise Uncertain(f"connection to {server.host}:{server.port} broke while sending the message: "
                            f"{exc}") from None
        if code != 250:
            raise _verdict(code, text, "end of data")
        return f"{code} {text.decode('utf-8', 'replace')}"
    finally:
        _close(smtp)
