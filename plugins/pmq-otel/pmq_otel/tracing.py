"""Setting up the SDK in pmq's own processes (settings section ``otel``).

An application that enqueues sets up OpenTelemetry its own way; pmq's
serving processes and workers have no such place, so the plugin sets up a
tracer provider there when ``PMQ_OTEL_EXPORTER`` asks for one, unless one is
already set (by ``opentelemetry-instrument``, say). Unset, the API's no-op
provider stays: spans cost next to nothing and go nowhere.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console")


@attrs.frozen(kw_only=True)
class OtelSettings:
    """How pmq's processes export their spans."""

    #: ``otlp`` (install ``pmq-otel[otlp]``; the endpoint and headers come
    #: from the standard ``OTEL_EXPORTER_OTLP_*`` variables) or ``console``
    #: (spans printed, for a try-out); unset, pmq's processes set up nothing.
    exporter: str | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.in_(EXPORTERS)))
    #: The ``service.name`` of the spans pmq's processes export.
    service_name: str = "pmq"


def set_up(config: OtelSettings) -> None:
    """Install a tracer provider exporting as ``config`` says, once per
    process, unless one is set already."""
    if config.exporter is None or isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(config.exporter)))
    trace.set_tracer_provider(provider)


def flush() -> None:
    """Export the spans still buffered (a worker stopping)."""
    provider: Any = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise RuntimeError("PMQ_OTEL_EXPORTER=otlp needs the OTLP exporter: pip install 'pmq-otel[otlp]'") from None
    exporter: SpanExporter = OTLPSpanExporter()
    return exporter
