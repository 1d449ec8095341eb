"""A worker process for the tracing tests: serves pmq (a migrator and a
worker, the plugins of PMQ_PLUGINS) with OpenTelemetry's in-memory span
exporter, and on SIGTERM writes the spans it finished, as JSON, to the file
named by its argument."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pmq_core import Settings
from pmq_core.runner import run_worker


def main(out: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    run_worker(Settings.load(), migrator=True)  # until SIGTERM
    out.write_text(json.dumps([json.loads(span.to_json()) for span in exporter.get_finished_spans()]))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
