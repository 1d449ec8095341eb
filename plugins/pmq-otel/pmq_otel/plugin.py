"""The pmq-otel plugin's hooks: a producer span around each enqueue, a
consumer span around each run (see :mod:`pmq_otel.spans`), and the SDK set
up in pmq's own processes when asked (see :mod:`pmq_otel.tracing`)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from pmq_core import JobContext, hookimpl
from pmq_otel import spans, tracing

SECTION = "otel"


@hookimpl
def pmq_register_settings() -> dict[str, type]:
    return {SECTION: tracing.OtelSettings}


@hookimpl
def pmq_serving_started(plugin_settings: dict[str, Any]) -> None:
    tracing.set_up(plugin_settings[SECTION])


@hookimpl
def pmq_worker_started(plugin_settings: dict[str, Any]) -> None:
    tracing.set_up(plugin_settings[SECTION])


@hookimpl
def pmq_worker_stopped() -> None:
    tracing.flush()


@hookimpl
def pmq_wrap_enqueue(queue: str, headers: dict[str, str]) -> Generator[None, Any, None]:
    return (yield from spans.enqueue_span(queue, headers))


@hookimpl
def pmq_wrap_job(job: JobContext) -> Generator[None, Any, Any]:
    return (yield from spans.run_span(job))
