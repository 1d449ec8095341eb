"""The hooks pmq loads through the ``webhook`` entry point."""

from __future__ import annotations

import logging
import os
import uuid

from pmq_core import JobType, Settings, hookimpl
from pmq_webhook import delivery

log = logging.getLogger("pmq_webhook")


@hookimpl
def pmq_register_job_types() -> list[JobType]:
    return [delivery.job_type()]


@hookimpl
def pmq_worker_started(worker_id: uuid.UUID, queues: list[str], settings: Settings) -> None:
    """Say at start, not job after job, that deliveries cannot be signed."""
    if delivery.NAME in queues and not os.environ.get(delivery.SECRET_ENV, "").strip():
        log.error("%s is not set on worker %s: every %s job will fail until it is", delivery.SECRET_ENV,
                  worker_id, delivery.NAME)
