"""pmq run with metrics on, as a real process: its /metrics endpoint, scraped
over HTTP and parsed with prometheus_client's own parser, counts what the
jobs table says, with one worker process or two."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pmq_core import Client
from pmq_core.testing import FAST, wait_until

SAMPLE = '''
import asyncio
from pmq_core import Fail, JobType, Retry, RetryPolicy, hookimpl

def ok(job):
    return None

def flaky(job):
    if job.attempt == 1:
        raise Retry("not yet", delay=0)

def doomed(job):
    raise Fail("never")

async def slow(job):
    await asyncio.sleep(5)

@hookimpl
def pmq_register_job_types():
    return [JobType(name="obs-ok", handler=ok),
            JobType(name="obs-flaky", handler=flaky, retry=RetryPolicy(max_attempts=3)),
            JobType(name="obs-doomed", handler=doomed),
            JobType(name="obs-slow", handler=slow, timeout=0.1, retry=RetryPolicy(max_attempts=1))]
'''

#: How many jobs of each queue the test enqueues.
JOBS = {"obs-ok": 20, "obs-flaky": 5, "obs-doomed": 3, "obs-slow": 2}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installed distribution (a module and its dist-info) with the job types."""
    folder = tmp_path_factory.mktemp("obs_plugin")
    (folder / "pmq_obs_sample.py").write_text(SAMPLE)
    info = folder / "pmq_obs_sample-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pmq-obs-sample\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pmq]\nobs-sample = pmq_obs_sample\n")
    return folder


@pytest.fixture
def env(pmq_settings: Any, sample_dir: Path, tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("PMQ_") and k != "PYTHONPATH"}
    environ.update({"PMQ_DATABASE_URL": pmq_settings.database_url, "PMQ_REDIS_URL": pmq_settings.redis_url,
                    "PMQ_KEY_PREFIX": pmq_settings.key_prefix, "PMQ_PLUGINS": "obs-sample,prometheus",
                    "PMQ_DATA_DIR": str(tmp_path / "embedded"), "PYTHONPATH": str(sample_dir)})
    environ.update({f"PMQ_{name.upper()}": str(value) for name, value in FAST.items()})
    environ["PMQ_METRICS_CACHE_SECONDS"] = "0"  # every scrape reads the gauges afresh
    return environ


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-m", "pmq_core.cli", *args], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``url``, by name and labels; {} while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def table_counts(database_url: str) -> dict[tuple[str, str], float]:
    """What the jobs table and the attempt log say, per queue and outcome."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("""
            SELECT queue_name, 'completed', count(*) FROM jobs WHERE status = 'completed' GROUP BY 1
            UNION ALL SELECT queue_name, 'dead', count(*) FROM jobs WHERE status = 'failed' GROUP BY 1
            UNION ALL SELECT j.queue_name, 'retried', count(*) FROM job_logs l JOIN jobs j ON j.id = l.job_id
                       WHERE l.status = 'retry' GROUP BY 1""").fetchall()
    return {(queue, outcome): float(count) for queue, outcome, count in rows}


def finished(samples: dict[Any, float]) -> dict[tuple[str, str], float]:
    return {(dict(labels)["queue"], dict(labels)["outcome"]): value for (name, labels), value in samples.items()
            if name == "pmq_jobs_finished_total" and value}


@pytest.mark.parametrize("processes", [1, 2])
def test_pmq_serving_started_serves_counters_that_equal_the_jobs_table(env, spawn, pmq_settings, processes):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    runtime = spawn(env, "run", "--metrics", f"127.0.0.1:{port}", "--processes", str(processes),
                    "--concurrency", "4")
    wait_until(lambda: scrape(url), bool, 30, "the metrics endpoint did not answer")
    with Client(pmq_settings) as client:
        ids = [i for queue, count in JOBS.items() for i in client.enqueue_many(queue, [{}] * count)]
    expected = {("obs-ok", "completed"): 20.0, ("obs-flaky", "retried"): 5.0, ("obs-flaky", "completed"): 5.0,
                ("obs-doomed", "dead"): 3.0, ("obs-slow", "dead"): 2.0}
    wait_until(lambda: table_counts(pmq_settings.database_url), lambda seen: seen == expected, 30,
               "the jobs did not all finish")
    samples = wait_until(lambda: scrape(url), lambda seen: finished(seen) == expected, 15,
                         "the counters never matched the jobs table")
    assert len(ids) == sum(JOBS.values())
    assert samples[("pmq_jobs_timed_out_total", (("queue", "obs-slow"),))] == 2.0
    assert samples[("pmq_job_duration_seconds_count", (("queue", "obs-ok"),))] == 20.0
    assert samples[("pmq_job_wait_seconds_count", (("queue", "obs-flaky"),))] == 10.0
    # The deployment's gauges, read from PostgreSQL and Redis on scrape.
    assert samples[("pmq_queue_dead_jobs", (("queue", "obs-doomed"),))] == 3.0
    assert samples[("pmq_workers_live", ())] == processes
    assert samples[("pmq_migrator_leader", ())] == 1.0
    assert samples[("pmq_up", (("server", "postgres"),))] == 1.0
    assert ("pmq_queue_redis_jobs", (("band", "high"), ("queue", "obs-ok"))) in samples
    runtime.send_signal(signal.SIGTERM)
    _out, err = runtime.communicate(timeout=45)
    assert runtime.returncode == 0, err
    assert "Traceback" not in err


def test_pmq_serving_started_refuses_a_port_in_use_naming_the_plugin(env, spawn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = spawn(env, "migrator", "--metrics", f"127.0.0.1:{port}")
        _out, err = result.communicate(timeout=60)
    assert result.returncode == 1
    assert "pmq: error: plugin 'prometheus' failed as the migrator started: OSError" in err, err


def test_without_the_setting_nothing_listens_and_a_bad_address_is_refused(env, spawn):
    bad = spawn({**env, "PMQ_METRICS_ADDRESS": "localhost"}, "worker")
    _out, err = bad.communicate(timeout=60)
    assert bad.returncode == 1
    assert "address: expected HOST:PORT" in err and "@ metrics" in err, err


def test_both_plugins_are_listed_and_metrics_is_an_option_of_the_serving_commands(env, tmp_path):
    env = {**env, "PMQ_PLUGINS": "obs-sample,prometheus,otel"}

    def pmq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pmq_core.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(max_workers=5) as pool:  # independent commands, at once
        listed, *serving, stats = pool.map(lambda args: pmq(*args), [
            ["plugins", "--json"], ["run", "--help"], ["worker", "--help"], ["migrator", "--help"],
            ["stats", "--help"]])
    assert listed.returncode == 0, listed.stderr
    assert {"prometheus", "otel"} <= {plugin["name"] for plugin in json.loads(listed.stdout)}
    for shown in serving:
        assert "--metrics VALUE" in shown.stdout and "PMQ_METRICS_ADDRESS" in shown.stdout, shown.stdout
    assert "--metrics" not in stats.stdout
