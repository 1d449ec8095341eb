"""The pmq-prometheus plugin's hooks.

Recording is on in a process that serves (``pmq run``/``worker``/
``migrator`` with ``--metrics`` or ``PMQ_METRICS_ADDRESS``) and in the
worker processes it starts; elsewhere the job hooks return at once.
Producers count their enqueues in prometheus_client's default registry,
which an application exposes with its own ``/metrics`` (a producer reads no
plugin setting).

The process's counts are module state rather than a worker resource: the
migrator, which ends jobs dead when their workers died, has no
``job.resources``, and recording is switched on once per process before any
job runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from pmq_core import JobContext, Settings, hookimpl
from pmq_prometheus import endpoint
from pmq_prometheus.settings import MetricsSettings
from pmq_prometheus.tally import SnapshotWriter, Tally, TallyCollector

log = logging.getLogger(__name__)

SECTION = "metrics"
#: This process's counts.
TALLY = Tally()


class _State:
    recording = False
    writer: SnapshotWriter | None = None
    registered = False  # TALLY in the default registry (a producer's)


def _config(plugin_settings: dict[str, Any]) -> MetricsSettings:
    config = plugin_settings.get(SECTION)
    return config if isinstance(config, MetricsSettings) else MetricsSettings()


def _record_into(directory: Path | None) -> None:
    """Switch recording on, writing this process's counts to ``directory``."""
    _State.recording = True
    if directory is not None and _State.writer is None:
        _State.writer = SnapshotWriter(TALLY, directory)


@hookimpl
def pmq_register_settings() -> dict[str, type]:
    return {SECTION: MetricsSettings}


@hookimpl
def pmq_serving_started(settings: Settings, plugin_settings: dict[str, Any]) -> None:
    config = _config(plugin_settings)
    if config.address is None:
        return
    directory = endpoint.shared_directory(config)
    endpoint.serve(config, settings, directory)
    _record_into(directory)
    log.info("serving Prometheus metrics at http://%s/metrics", config.address)


@hookimpl
def pmq_worker_started(plugin_settings: dict[str, Any]) -> None:
    config = _config(plugin_settings)
    if config.address is not None:
        _record_into(Path(config.snapshot_dir) if config.snapshot_dir else None)


@hookimpl
def pmq_worker_stopped() -> None:
    if _State.writer is not None:
        _State.writer.write_now()


@hookimpl
def pmq_jobs_enqueued(queue: str, job_ids: list[uuid.UUID]) -> None:
    if not _State.recording and not _State.registered:
        _State.registered = True
        REGISTRY.register(TallyCollector(TALLY))
    TALLY.inc("pmq_jobs_enqueued", queue, amount=len(job_ids))


@hookimpl(tryfirst=True)
def pmq_wrap_job(job: JobContext) -> Generator[None, Any, Any]:
    """One hook for a job that succeeds: the outermost wrapper (``tryfirst``)
    sees the attempt's own outcome, and a successful job costs no other hook
    call. Failures are counted by ``pmq_job_failed`` (which knows whether
    another attempt follows) and ``pmq_job_dead``."""
    if not _State.recording:
        return (yield)
    if job.run_at is not None:
        TALLY.observe("pmq_job_wait_seconds", job.queue, max(0.0, (job.started_at - job.run_at).total_seconds()))
    started = time.perf_counter()
    try:
        result = yield
    except asyncio.CancelledError:
        if job.stop_reason == "cancelled":
            TALLY.inc("pmq_jobs_finished", job.queue, "cancelled")
        raise
    finally:
        TALLY.observe("pmq_job_duration_seconds", job.queue, time.perf_counter() - started)
    TALLY.inc("pmq_jobs_finished", job.queue, "completed")
    return result


@hookimpl
def pmq_job_failed(job: JobContext, error: BaseException, will_retry: bool) -> None:
    if not _State.recording:
        return
    if will_retry:
        TALLY.inc("pmq_jobs_finished", job.queue, "retried")
    if isinstance(error, TimeoutError):
        TALLY.inc("pmq_jobs_timed_out", job.queue)


@hookimpl
def pmq_job_dead(job: JobContext) -> None:
    if _State.recording:
        TALLY.inc("pmq_jobs_finished", job.queue, "dead")
