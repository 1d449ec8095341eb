"""Counts summed over the processes of a run, as Prometheus reads them."""

from __future__ import annotations

import json

import pytest
from pmq_prometheus.tally import SnapshotCollector, SnapshotWriter, Tally
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_two_processes_counts_are_summed_with_prometheus_bucket_bounds(tmp_path):
    first, second = Tally(), Tally()
    first.inc("pmq_jobs_finished", "q", "completed")
    second.inc("pmq_jobs_finished", "q", "completed", amount=2)
    for value in (0.005, 0.0051, 400.0):  # on a bound, just above it, beyond the last
        first.observe("pmq_job_duration_seconds", "q", value)
    SnapshotWriter(first, tmp_path).write_now()
    (tmp_path / "4242.json").write_text(json.dumps(second.snapshot()))  # a process that has exited
    (tmp_path / "9999.json").write_text("{half a fi")  # one being replaced: skipped this time
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(tmp_path))
    seen = samples(registry)
    assert seen[("pmq_jobs_finished_total", (("outcome", "completed"), ("queue", "q")))] == 3.0
    bucket = "pmq_job_duration_seconds_bucket"
    assert seen[(bucket, (("le", "0.005"), ("queue", "q")))] == 1.0  # le is inclusive
    assert seen[(bucket, (("le", "0.01"), ("queue", "q")))] == 2.0
    assert seen[(bucket, (("le", "300.0"), ("queue", "q")))] == 2.0
    assert seen[(bucket, (("le", "+Inf"), ("queue", "q")))] == 3.0
    assert seen[("pmq_job_duration_seconds_count", (("queue", "q"),))] == 3.0
    assert seen[("pmq_job_duration_seconds_sum", (("queue", "q"),))] == pytest.approx(400.0101)
