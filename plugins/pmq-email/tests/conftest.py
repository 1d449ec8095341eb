"""Fixtures for pmq-email's tests: a real SMTP server, a templates and an
inbound directory, and the plugin wired to a fresh pmq database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller
from email_testkit import DOMAIN, SENDER, WELCOME, SmtpSink, free_port
from pmq_email import EmailConfig, EmailPlugin, SmtpServer

from pmq_core import Settings
from pmq_core.testing import Runtime


@pytest.fixture
def smtp_sink() -> Iterator[tuple[SmtpSink, int]]:
    """A real SMTP server on a free local port, and what it received."""
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield sink, controller.port
    controller.stop()


@pytest.fixture
def email_config(tmp_path: Path, smtp_sink: tuple[SmtpSink, int]) -> EmailConfig:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "welcome.txt").write_text(WELCOME, encoding="utf-8")
    inbound = tmp_path / "inbound"
    inbound.mkdir()
    return EmailConfig(smtp=SmtpServer(host="127.0.0.1", port=smtp_sink[1], timeout=5), sender=SENDER,
                       templates=templates, inbound_dir=inbound, message_id_domain=DOMAIN)


@pytest.fixture
def email_plugin(email_config: EmailConfig) -> EmailPlugin:
    return EmailPlugin(email_config)


@attrs.frozen
class EmailDb:
    """A test runtime (no worker) with pmq-email's tables, and the resources
    a worker would give the plugin's handlers there."""

    runtime: Runtime
    resources: Mapping[str, Any]

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


@pytest.fixture
def email_db(pmq_runtime: Any, email_plugin: EmailPlugin) -> Iterator[EmailDb]:
    """The schema (pmq-email's tables included) and queues, no worker: the
    plugin's resources are opened here, for handlers run inline."""
    runtime = pmq_runtime(email_plugin, worker=False, migrator=False)
    resources = email_plugin.pmq_worker_resources(runtime.settings)
    yield EmailDb(runtime, resources)
    for resource in resources.values():
        resource.close()
