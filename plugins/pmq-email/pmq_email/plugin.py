"""The pmq-email plugin: its job types, its tables, and where it finds its
configuration and database.

Installed, it is the entry point ``email`` of the ``pmq`` group (the
module-level :data:`plugin`). It declares its settings to pmq (section
``email``), and the worker that starts it gives it those settings. Its
handlers share one connection pool per worker process, which they find in
``job.resources[DATABASE]``: the worker opens it (``pmq_worker_resources``)
and closes it when it stops. Tests and applications may build their own
:class:`EmailPlugin` with an explicit configuration and register that
instead.
"""

from __future__ import annotations

import threading
from typing import Any

from pmq_core import (
    ConfigurationError,
    JobContext,
    JobType,
    Limit,
    Limits,
    Migration,
    Rate,
    RetryPolicy,
    Settings,
    hookimpl,
    load_plugin_settings,
)
from pmq_email import bounces, delivery, inbound, partitions, sending, warmup
from pmq_email.config import DOMAIN_RATE, SECTION, EmailConfig, EmailSettings
from pmq_email.database import Database
from pmq_email.payloads import DeliverEmail, InboundMessage, SendEmail, WarmupStep
from pmq_email.queries import migrations

#: The name of pmq-email's database (a :class:`Database`) in ``job.resources``.
DATABASE = "pmq-email.database"


class EmailPlugin:
    """PenguinMails' email job types.

    ``config``, when given, is used as it is. Otherwise the configuration
    comes from the plugin's settings: those the worker gives
    (``pmq_worker_started``), or, for handlers run before any worker did,
    read on first need. The database is the worker's (its
    ``database_url``); code that runs a handler outside a worker gives it
    ``pmq_worker_resources(settings)``.
    """

    def __init__(self, config: EmailConfig | None = None) -> None:
        self._config = config
        self._given = config is not None
        self._lock = threading.Lock()

    @property
    def config(self) -> EmailConfig:
        if self._config is None:
            self._config = EmailConfig.from_settings(load_plugin_settings(SECTION, EmailSettings))
        return self._config

    # -- handlers --------------------------------------------------------------

    def send_email(self, job: JobContext) -> dict[str, Any]:
        return sending.send_email(job, self.config, job.resources[DATABASE])

    def deliver_email(self, job: JobContext) -> dict[str, Any]:
        return delivery.deliver_email(job, self.config, job.resources[DATABASE])

    def process_inbound(self, job: JobContext) -> dict[str, Any]:
        return inbound.process_inbound(job, self.config, job.resources[DATABASE])

    def process_bounce(self, job: JobContext) -> dict[str, Any]:
        return bounces.process_bounce(job, self.config, job.resources[DATABASE])

    def warmup_step(self, job: JobContext) -> dict[str, Any]:
        return warmup.run_step(job, job.resources[DATABASE])

    # -- flow control ----------------------------------------------------------

    def sending_mailbox(self, payload: dict[str, Any]) -> str | None:
        """email-sending's partition: the mailbox the payload names, else the
        configured sender's (as this process's settings say); the default
        partition when neither is known."""
        account = payload.get("account") or self.config.default_account()
        return partitions.mailbox(account) if account else None

    def domain_rate(self) -> Rate:
        """The rate email-delivery declares for each recipient domain. While
        the settings cannot be read, the default: a worker refuses such
        settings, naming every bad value, before it runs anything."""
        try:
            return self.config.domain_rate
        except ConfigurationError:
            return Rate.parse(DOMAIN_RATE)

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [
            JobType(name=sending.SENDING_QUEUE, handler=self.send_email, payload=SendEmail, priority=100,
                    timeout=30, retry=RetryPolicy(max_attempts=6), partition=self.sending_mailbox, limits=Limits(),
                    description="Render a template as its mailbox's daily limit allows; hand it to email-delivery."),
            JobType(name=delivery.DELIVERY_QUEUE, handler=self.deliver_email, payload=DeliverEmail, priority=100,
                    timeout=30, retry=RetryPolicy(max_attempts=6),
                    limits=Limits(each_partition=Limit(rate=self.domain_rate())),
                    description="Send a rendered message by SMTP, once, as its recipient domain's rate allows."),
            JobType(name="email-processing", handler=self.process_inbound, payload=InboundMessage, priority=75,
                    timeout=60, description="Record an inbound message; hand bounce reports to bounce:process."),
            JobType(name=inbound.BOUNCE_QUEUE, handler=self.process_bounce, payload=InboundMessage, priority=75,
                    timeout=60, description="Record a bounce report and suppress hard-bounced addresses."),
            JobType(name=warmup.WARMUP_QUEUE, handler=self.warmup_step, payload=WarmupStep, priority=75,
                    timeout=120, description="Run one day of an account's warm-up plan; schedule the next."),
        ]

    @hookimpl
    def pmq_register_migrations(self) -> list[Migration]:
        return migrations()

    @hookimpl
    def pmq_register_settings(self) -> dict[str, type]:
        return {SECTION: EmailSettings}

    @hookimpl
    def pmq_worker_resources(self, settings: Settings) -> dict[str, Any]:
        """The worker's database for the handlers: its pool opens on first
        use, and the worker closes it once its last job is done."""
        return {DATABASE: Database(settings, "pmq-email")}

    @hookimpl
    def pmq_worker_started(self, plugin_settings: dict[str, Any]) -> None:
        """Take the worker's plugin settings, unless a configuration was given."""
        with self._lock:
            if not self._given:
                self._config = EmailConfig.from_settings(plugin_settings[SECTION])


#: The instance the ``pmq`` entry point loads.
plugin = EmailPlugin()
