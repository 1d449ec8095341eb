"""pmq-email: PenguinMails' email job types for pmq.

- ``email-sending``: render a template and send it through SMTP, at most once;
- ``email-processing``: record an inbound message, and pass delivery status
  notifications to ``bounce:process``;
- ``bounce:process``: record bounces, suppress hard-bounced addresses;
- ``warmup:process``: run one day of an account's warm-up plan.

See README.md for configuration and payloads.
"""

from pmq_email.config import EmailConfig, EmailSettings, SmtpServer
from pmq_email.payloads import InboundMessage, SendEmail, WarmupStep
from pmq_email.plugin import EmailPlugin, plugin

__all__ = ["EmailConfig", "EmailPlugin", "EmailSettings", "InboundMessage", "SendEmail", "SmtpServer", "WarmupStep",
           "plugin"]
