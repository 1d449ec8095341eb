"""The pmq-prometheus plugin's hooks.

Recording is on in a process that serves (``pmq run``/``worker``/
``migrator`` with ``--metrics`` or ``PMQ_METRICS_ADDRESS``) and in the
worker processes it starts; elsewhere the hooks return at once. Producers
count their enqueues in prometheus_client's default registry, which an
application exposes with its own ``/metrics`` (a producer reads no plugin
setting).

The switch is module state rather than a worker resource: the
migrator, which ends jobs dead when their workers died, has no
``job.resources``, and the flag is set once per process before any job runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from pmq_core import JobContext, Settings, hookimpl
from pmq_prometheus import endpoint
from pmq_prometheus.settings import MetricsSettings

if TYPE_CHECKING:
    from pmq_prometheus.recorder import Recorder

log = logging.getLogger(__name__)

SECTION = "metrics"


class _State:
    #: This process's metrics once recording is on (see the module's docstring).
    recorder: Recorder | None = None


def _start_recording() -> None:
    """Create the process's metrics: prometheus_client is imported only now,
    once the serving process has chosen its mode (see :mod:`pmq_prometheus.endpoint`)."""
    from pmq_prometheus.recorder import recorder

    _State.recorder = recorder()


def _config(plugin_settings: dict[str, Any]) -> MetricsSettings:
    config = plugin_settings.get(SECTION)
    return config if isinstance(config, MetricsSettings) else MetricsSettings()


@hookimpl
def pmq_register_settings() -> dict[str, type]:
    return {SECTION: MetricsSettings}


@hookimpl
def pmq_serving_started(settings: Settings, plugin_settings: dict[str, Any]) -> None:
    config = _config(plugin_settings)
    if config.address is None:
        return
    endpoint.use_multiprocess_mode()
    endpoint.serve(config, settings)
    _start_recording()
    log.info("serving Prometheus metrics at http://%s/metrics", config.address)


@hookimpl
def pmq_worker_started(plugin_settings: dict[str, Any]) -> None:
    if _config(plugin_settings).address is not None:
        _start_recording()


@hookimpl
def pmq_jobs_enqueued(queue: str, job_ids: list[uuid.UUID]) -> None:
    from pmq_prometheus.recorder import recorder

    recorder().queue(queue).enqueued.inc(len(job_ids))


@hookimpl
def pmq_job_started(job: JobContext) -> None:
    if _State.recorder is not None and job.run_at is not None:
        _State.recorder.queue(job.queue).wait.observe(max(0.0, (job.started_at - job.run_at).total_seconds()))


@hookimpl
def pmq_wrap_job(job: JobContext) -> Generator[None, Any, Any]:
    if _State.recorder is None:
        return (yield)
    metrics = _State.recorder.queue(job.queue)
    started = time.perf_counter()
    try:
        result = yield
    except asyncio.CancelledError:
        if job.stop_reason == "cancelled":
            metrics.outcome["cancelled"].inc()
        raise
    finally:
        metrics.duration.observe(time.perf_counter() - started)
    return result


@hookimpl
def pmq_job_succeeded(job: JobContext) -> None:
    if _State.recorder is not None:
        _State.recorder.queue(job.queue).outcome["completed"].inc()


@hookimpl
def pmq_job_failed(job: JobContext, error: BaseException, will_retry: bool) -> None:
    if _State.recorder is None:
        return
    metrics = _State.recorder.queue(job.queue)
    if will_retry:
        metrics.outcome["retried"].inc()
    if isinstance(error, TimeoutError):
        metrics.timed_out.inc()


@hookimpl
def pmq_job_dead(job: JobContext) -> None:
    if _State.recorder is not None:
        _State.recorder.queue(job.queue).outcome["dead"].inc()
