"""The pmq-email plugin: its job types, its tables, and where it finds its
configuration and database.

Installed, it is the entry point ``email`` of the ``pmq`` group (the
module-level :data:`plugin`). It declares its settings to pmq (section
``email``), and the worker that starts it gives it those settings and the
database. Tests and applications may build their own :class:`EmailPlugin`
with an explicit configuration and register that instead.
"""

from __future__ import annotations

import threading
from typing import Any

from pmq_core import (
    ConfigurationError,
    JobContext,
    JobType,
    Migration,
    RetryPolicy,
    Settings,
    hookimpl,
    load_plugin_settings,
)
from pmq_email import bounces, inbound, sending, warmup
from pmq_email.config import SECTION, EmailConfig, EmailSettings
from pmq_email.database import Database
from pmq_email.payloads import InboundMessage, SendEmail, WarmupStep
from pmq_email.queries import migrations


class EmailPlugin:
    """PenguinMails' email job types.

    ``config``, when given, is used as it is. Otherwise the configuration
    comes from the plugin's settings: those the worker gives
    (``pmq_worker_started``), or, for handlers run before any worker did,
    read on first need. The database comes from the worker's settings or
    from :meth:`configure`, for code that runs handlers outside a worker.
    """

    def __init__(self, config: EmailConfig | None = None) -> None:
        self._config = config
        self._given = config is not None
        self._db: Database | None = None
        self._lock = threading.Lock()

    @property
    def config(self) -> EmailConfig:
        if self._config is None:
            self._config = EmailConfig.from_settings(load_plugin_settings(SECTION, EmailSettings))
        return self._config

    @property
    def db(self) -> Database:
        if self._db is None:
            raise ConfigurationError("pmq-email has no database yet: it is given when a worker starts, "
                                     "or call configure(settings) first")
        return self._db

    def configure(self, settings: Settings) -> None:
        """Use the database of ``settings`` (replacing any earlier one)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = Database(settings, "pmq-email")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- handlers --------------------------------------------------------------

    def send_email(self, job: JobContext) -> dict[str, Any]:
        return sending.send_email(job, self.config, self.db)

    def process_inbound(self, job: JobContext) -> dict[str, Any]:
        return inbound.process_inbound(job, self.config, self.db)

    def process_bounce(self, job: JobContext) -> dict[str, Any]:
        return bounces.process_bounce(job, self.config, self.db)

    def warmup_step(self, job: JobContext) -> dict[str, Any]:
        return warmup.run_step(job, self.db)

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [
            JobType(name="email-sending", handler=self.send_email, payload=SendEmail, priority=100, timeout=30,
                    retry=RetryPolicy(max_attempts=6), description="Render a template and send it by SMTP, once."),
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
    def pmq_worker_started(self, settings: Settings, plugin_settings: dict[str, Any]) -> None:
        """Take the worker's plugin settings (unless a configuration was
        given) and database; the pool opens on first use."""
        with self._lock:
            if not self._given:
                self._config = EmailConfig.from_settings(plugin_settings[SECTION])
            if self._db is None or self._db.url != settings.database_url:
                if self._db is not None:
                    self._db.close()
                self._db = Database(settings, "pmq-email")

    @hookimpl
    def pmq_worker_stopped(self) -> None:
        """Close the pool once the worker's last job is done."""
        self.close()


#: The instance the ``pmq`` entry point loads.
plugin = EmailPlugin()
