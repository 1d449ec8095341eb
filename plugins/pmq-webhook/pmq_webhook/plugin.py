"""The hooks pmq loads through the ``webhook`` entry point."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pmq_core import JobType, hookimpl
from pmq_webhook import delivery

log = logging.getLogger("pmq_webhook")


@hookimpl
def pmq_register_job_types() -> list[JobType]:
    return [delivery.job_type()]


@hookimpl
def pmq_register_settings() -> dict[str, type]:
    return {delivery.SECTION: delivery.WebhookSettings}


@hookimpl
def pmq_worker_started(worker_id: uuid.UUID, queues: list[str], plugin_settings: dict[str, Any]) -> None:
    """Say at start, not job after job, that deliveries cannot be signed."""
    if delivery.NAME in queues and plugin_settings[delivery.SECTION].secret is None:
        log.error("%s on worker %s: every %s job will fail until it is set", delivery.MISSING_SECRET, worker_id,
                  delivery.NAME)
