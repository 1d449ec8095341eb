"""pmq-email: PenguinMails' email job types for pmq.

- ``email-sending``: render a template, as its mailbox's daily limit allows,
  and hand it to ``email-delivery``;
- ``email-delivery``: send it through SMTP, at most once, as its recipient
  domain's rate allows;
- ``email-processing``: record an inbound message, and pass delivery status
  notifications to ``bounce:process``;
- ``bounce:process``: record bounces, suppress hard-bounced addresses;
- ``warmup:process``: run one day of an account's warm-up plan.

See README.md for configuration and payloads.
"""

from pmq_email.config import EmailConfig, EmailSettings, SmtpServer
from pmq_email.payloads import DeliverEmail, InboundMessage, SendEmail, WarmupStep
from pmq_email.plugin import EmailPlugin, plugin

__all__ = ["DeliverEmail", "EmailConfig", "EmailPlugin", "EmailSettings", "InboundMessage", "SendEmail", "SmtpServer",
           "WarmupStep", "plugin"]
