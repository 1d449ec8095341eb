"""OpenTelemetry traces for pmq, as a plugin: see :mod:`pmq_otel.plugin`."""

from pmq_otel.spans import ATTRIBUTES
from pmq_otel.tracing import OtelSettings

__all__ = ["ATTRIBUTES", "OtelSettings"]
