"""The spans of an enqueue (producer) and of a run (consumer).

Named and described by OpenTelemetry's semantic conventions for messaging:
``send <queue>`` and ``process <queue>``, with ``messaging.system`` = pmq,
``messaging.destination.name`` = the queue, ``messaging.operation.type``
(``send`` or ``process``), the job's id and its attempt. The trace context
travels as W3C ``traceparent``/``tracestate`` in the job's headers, never in
its payload; baggage is left out (it can be large, and headers are bounded).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Generator
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pmq_core import JobContext

#: The attribute names this plugin sets, one place.
ATTRIBUTES = {
    "system": "messaging.system",
    "destination": "messaging.destination.name",
    "operation_type": "messaging.operation.type",
    "operation_name": "messaging.operation.name",
    "message_id": "messaging.message.id",
    "batch_count": "messaging.batch.message_count",
    "attempt": "pmq.job.attempt",
    "max_attempts": "pmq.job.max_attempts",
    "stop_reason": "pmq.job.stop_reason",
}
SYSTEM = "pmq"

_propagator = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("pmq_otel")  # a proxy: follows the provider set later


def enqueue_span(queue: str, headers: dict[str, str]) -> Generator[None, Any, None]:
    """The producer span of one enqueue call, current while it writes, its
    context injected into the jobs' headers."""
    span = _tracer.start_span(f"send {queue}", kind=SpanKind.PRODUCER, attributes={
        ATTRIBUTES["system"]: SYSTEM, ATTRIBUTES["destination"]: queue,
        ATTRIBUTES["operation_type"]: "send", ATTRIBUTES["operation_name"]: "send"})
    token = context.attach(trace.set_span_in_context(span))
    try:
        _propagator.inject(headers)
        ids: list[uuid.UUID] = yield
        if len(ids) == 1:
            span.set_attribute(ATTRIBUTES["message_id"], str(ids[0]))
        else:
            span.set_attribute(ATTRIBUTES["batch_count"], len(ids))
    except Exception as exc:
        _failed(span, exc)
        raise
    finally:
        context.detach(token)
        span.end()


def run_span(job: JobContext) -> Generator[None, Any, Any]:
    """The consumer span of one attempt, a child of its enqueue's span
    (when the job carries trace context), current while the handler runs."""
    parent = _propagator.extract(dict(job.headers))
    span = _tracer.start_span(f"process {job.queue}", context=parent, kind=SpanKind.CONSUMER, attributes={
        ATTRIBUTES["system"]: SYSTEM, ATTRIBUTES["destination"]: job.queue,
        ATTRIBUTES["operation_type"]: "process", ATTRIBUTES["operation_name"]: "process",
        ATTRIBUTES["message_id"]: str(job.id), ATTRIBUTES["attempt"]: job.attempt,
        ATTRIBUTES["max_attempts"]: job.max_attempts})
    token = context.attach(trace.set_span_in_context(span))
    try:
        return (yield)
    except asyncio.CancelledError:  # cancelled, or given back at shutdown: not the handler's failure
        span.set_attribute(ATTRIBUTES["stop_reason"], job.stop_reason or "cancelled")
        raise
    except Exception as exc:
        _failed(span, exc)
        raise
    finally:
        context.detach(token)
        span.end()


def _failed(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
