"""One trace from a web request to the job it enqueued, across two
processes: the producer's spans come from the SDK's in-memory exporter in
this process, the worker's from the same exporter in a worker process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pmq_core import Client
from pmq_core.testing import FAST, wait_until

HERE = Path(__file__).parent

SAMPLE = '''
from pmq_core import Fail, JobType, hookimpl

def ok(job):
    return None

def broken(job):
    raise Fail("the payment provider said no")

@hookimpl
def pmq_register_job_types():
    return [JobType(name="traced-ok", handler=ok), JobType(name="traced-broken", handler=broken)]
'''


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    """The in-memory exporter of this process's tracer provider (set once
    per process, as OpenTelemetry allows)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("otel_plugin")
    (folder / "pmq_traced_sample.py").write_text(SAMPLE)
    info = folder / "pmq_traced_sample-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pmq-traced-sample\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pmq]\ntraced-sample = pmq_traced_sample\n")
    return folder


def statuses(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT id::text, status FROM jobs").fetchall())


def test_pmq_wrap_enqueue_and_pmq_wrap_job_join_one_trace_across_processes(pmq_settings, sample_dir, tmp_path,
                                                                           exporter, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_") and k != "PYTHONPATH"}
    env.update({"PMQ_DATABASE_URL": pmq_settings.database_url, "PMQ_REDIS_URL": pmq_settings.redis_url,
                "PMQ_KEY_PREFIX": pmq_settings.key_prefix, "PMQ_PLUGINS": "traced-sample,otel",
                "PYTHONPATH": os.pathsep.join([str(sample_dir), str(HERE)])})
    env.update({f"PMQ_{name.upper()}": str(value) for name, value in FAST.items()})
    out = tmp_path / "spans.json"
    worker = subprocess.Popen([sys.executable, str(HERE / "otel_worker.py"), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        monkeypatch.syspath_prepend(str(sample_dir))  # the client loads every installed plugin
        tracer = trace.get_tracer("a web app")
        with Client(pmq_settings) as client, tracer.start_as_current_span("POST /orders") as request:
            done = client.enqueue("traced-ok", {"order": 7})
            dead = client.enqueue("traced-broken", {"order": 8})
        wait_until(lambda: statuses(pmq_settings.database_url), lambda seen: seen == {
            str(done): "completed", str(dead): "failed"}, 30, "the jobs did not finish")
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=45)
    assert worker.returncode == 0, err
    web_trace = request.get_span_context().trace_id
    sends = {s.attributes["messaging.message.id"]: s for s in exporter.get_finished_spans()
             if s.kind is SpanKind.PRODUCER}
    runs = {s["attributes"]["messaging.message.id"]: s for s in json.loads(out.read_text())}
    assert set(sends) == set(runs) == {str(done), str(dead)}
    for job_id in (str(done), str(dead)):
        send, run = sends[job_id], runs[job_id]
        assert send.context.trace_id == web_trace and send.parent.span_id == request.get_span_context().span_id
        assert run["context"]["trace_id"] == f"0x{web_trace:032x}"  # the same trace, in another process
        assert run["parent_id"] == f"0x{send.context.span_id:016x}"
        assert run["kind"] == "SpanKind.CONSUMER"
        assert send.attributes["messaging.system"] == run["attributes"]["messaging.system"] == "pmq"
        assert send.attributes["messaging.operation.type"] == "send"
        assert run["attributes"]["messaging.operation.type"] == "process"
        assert run["attributes"]["pmq.job.attempt"] == 1
    assert sends[str(done)].name == "send traced-ok" and runs[str(done)]["name"] == "process traced-ok"
    assert runs[str(done)]["status"]["status_code"] == "UNSET"
    failed = runs[str(dead)]
    assert failed["status"]["status_code"] == StatusCode.ERROR.name
    [event] = failed["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "the payment provider said no"
    assert event["attributes"]["exception.type"].endswith("Fail")


def test_an_enqueue_that_fails_ends_its_span_with_the_error(pmq_settings, exporter, monkeypatch, sample_dir):
    monkeypatch.syspath_prepend(str(sample_dir))
    exporter.clear()
    with Client(pmq_settings) as client, pytest.raises(Exception, match="must be"):
        client.enqueue("traced-ok", {"order": 1}, priority="high")
    [send] = exporter.get_finished_spans()
    assert send.name == "send traced-ok" and send.status.status_code is StatusCode.ERROR
    assert send.events[0].name == "exception"


def test_jobs_without_trace_context_start_their_own_trace(pmq_runtime, exporter):
    from pmq_otel import plugin

    from pmq_core import JobType, hookimpl

    class Jobs:
        @hookimpl
        def pmq_register_job_types(self) -> list[JobType]:
            return [JobType(name="untraced", handler=lambda job: dict(job.headers))]

    rt = pmq_runtime(Jobs(), plugin)
    exporter.clear()
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:  # a plain-SQL producer
        row: Any = conn.execute("INSERT INTO jobs (id, queue_name, payload) VALUES (gen_random_uuid(), 'untraced', "
                                "'{}') RETURNING id").fetchone()
    assert rt.wait(row[0]).status.value == "completed"
    [run] = wait_until(lambda: [s for s in exporter.get_finished_spans() if s.name == "process untraced"], bool, 5,
                       "no span for the run")
    assert run.parent is None and run.attributes["messaging.message.id"] == str(row[0])


@pytest.mark.parametrize("headers", [
    {"traceparent": "garbage"}, {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # all-zero ids
    {"tracestate": "x" * 4000}, {}])
def test_hostile_trace_context_starts_a_trace_of_its_own(exporter, headers):
    from datetime import UTC, datetime
    from uuid import uuid4

    from pmq_otel import spans

    from pmq_core import JobContext

    now = datetime.now(UTC)
    job = JobContext(id=uuid4(), queue="q", payload={}, attempt=1, max_attempts=1, priority=100, created_at=now,
                     started_at=now, raw_payload={}, headers=headers)
    exporter.clear()
    run = spans.run_span(job)
    next(run)
    with pytest.raises(StopIteration):
        run.send("result")
    [span] = exporter.get_finished_spans()
    assert span.parent is None and span.name == "process q"
