"""The ``pmq`` command, run as a real process against real servers.

Job types come from a tiny plugin distribution written at test time: a module
and its ``.dist-info`` folder (metadata and entry points) on PYTHONPATH,
which is exactly how Python finds an installed distribution. Every command
runs with ``PMQ_PLUGINS`` selecting it, so other installed plugins do not
change what is tested. State a test needs beforehand is arranged in-process
with pmq's testing kit (quicker than a process per step); what is under test
always runs as ``pmq``. Independent invocations run concurrently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

from pmq_core import Client, schema
from pmq_core.client import POOL_WAIT
from pmq_core.plugins import Plugins
from pmq_core.testing import FAST, Servers, wait_until

SAMPLE_PLUGIN = '''
"""A pmq plugin for the command-line tests."""
import attrs
import click

from pmq_core import Fail, JobType, RetryPolicy, hookimpl


@attrs.frozen
class Echo:
    n: int
    note: str = ""


def echo(job):
    return job.payload.n


def doomed(job):
    raise Fail("this job can never succeed")


@hookimpl
def pmq_register_job_types():
    return [
        JobType(name="cli-echo", handler=echo, payload=Echo, priority=30, timeout=5),
        JobType(name="cli-doomed", handler=doomed, retry=RetryPolicy(max_attempts=2, base_delay=0.01)),
    ]


@hookimpl
def pmq_register_commands(cli):
    @cli.command()
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from cli-sample")
'''

GREEDY_PLUGIN = '''
import click

from pmq_core import hookimpl


@hookimpl
def pmq_register_commands(cli):
    @cli.command("jobs")
    def hijack():
        """Tries to replace a built-in command."""
'''

BROKEN_PLUGIN = 'raise ImportError("this plugin is broken on purpose")\n'


def _distribution(folder: Path, name: str, module: str, source: str) -> None:
    """Write an "installed" distribution: a module and its dist-info."""
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[pmq]\n{name.removeprefix('pmq-')} = {module}\n")


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_plugins")
    _distribution(folder, "pmq-cli-sample", "pmq_cli_sample", SAMPLE_PLUGIN)
    _distribution(folder, "pmq-cli-greedy", "pmq_cli_greedy", GREEDY_PLUGIN)
    _distribution(folder, "pmq-cli-broken", "pmq_cli_broken", BROKEN_PLUGIN)
    return folder


@pytest.fixture(scope="session")
def sample_plugin(plugin_dir: Path) -> ModuleType:
    """The sample plugin module, loaded in this process for arranging state."""
    spec = importlib.util.spec_from_file_location("pmq_cli_sample", plugin_dir / "pmq_cli_sample.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def env(pmq_settings: Any, plugin_dir: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``pmq`` process using this test's database and
    key prefix, with the sample plugin selected."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_") and k != "PYTHONPATH"}
    environ.update({
        "PMQ_DATABASE_URL": pmq_settings.database_url,
        "PMQ_REDIS_URL": pmq_settings.redis_url,
        "PMQ_KEY_PREFIX": pmq_settings.key_prefix,
        "PMQ_PLUGINS": "cli-sample",
        "PMQ_DATA_DIR": str(tmp_path / "embedded"),
        "PYTHONPATH": str(plugin_dir),
    })
    environ.update({f"PMQ_{name.upper()}": str(value) for name, value in FAST.items()})
    return environ


@pytest.fixture
def client(pmq_settings: Any, sample_plugin: ModuleType) -> Iterator[Client]:
    """A client in this process, with the sample plugin's job types."""
    with Client(pmq_settings, plugins=Plugins(None, [sample_plugin], entry_points=False)) as own:
        yield own


Result = subprocess.CompletedProcess


def pmq(env: dict[str, str], *args: str, timeout: float = 60) -> Result[str]:
    """Run the real ``pmq`` command and return its outcome."""
    return subprocess.run([sys.executable, "-m", "pmq_core.cli", *args], env=env, cwd=Path(env["PMQ_DATA_DIR"]).parent,
                          capture_output=True, text=True, timeout=timeout)


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Call independent functions at once; their results in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: call(), calls))


def pmq_all(env: dict[str, str], *commands: Sequence[str]) -> list[Result[str]]:
    """Run independent ``pmq`` commands concurrently; their outcomes in order."""
    return concurrently(*(lambda args=args: pmq(env, *args) for args in commands))


def ok(result: Result[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def error_line(result: Result[str], code: int = 1) -> str:
    """The one error line of a failed command (asserting there is only one)."""
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pmq: error: "), result.stderr
    return lines[0]


def as_json(result: Result[str]) -> Any:
    return json.loads(ok(result))


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start long-running ``pmq`` processes; any left running are killed."""
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


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM, then the exit status and what it logged."""
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=45)
    return process.returncode, err


def statuses(env: dict[str, str], ids: Sequence[Any]) -> list[str]:
    ids = [str(i) for i in ids]
    with psycopg.connect(env["PMQ_DATABASE_URL"]) as conn:
        rows = dict(conn.execute("SELECT id::text, status FROM jobs WHERE id = ANY(%s::uuid[])", (ids,)).fetchall())
    return [rows.get(i, "missing") for i in ids]


def wait_for(env: dict[str, str], ids: Sequence[Any], wanted: list[str], timeout: float = 30) -> None:
    wait_until(lambda: statuses(env, ids), lambda seen: seen == wanted, timeout, f"jobs did not reach {wanted}")


def job_count(env: dict[str, str]) -> int:
    with psycopg.connect(env["PMQ_DATABASE_URL"]) as conn:
        return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]  # type: ignore[index]


def workers(env: dict[str, str]) -> int:
    with psycopg.connect(env["PMQ_DATABASE_URL"]) as conn:
        return conn.execute("SELECT count(*) FROM pmq_workers").fetchone()[0]  # type: ignore[index]


# -- the command itself and its plugins ------------------------------------------------


def test_pmq_register_commands_adds_to_help_but_cannot_replace_a_builtin(env):
    greedy = {**env, "PMQ_PLUGINS": "cli-sample,cli-greedy"}
    helped, hello, version = pmq_all(greedy, ["--help"], ["hello"], ["--version"])
    out = ok(helped)
    for name in ("db", "run", "worker", "migrator", "enqueue", "jobs", "queues", "dlq", "health", "stats",
                 "plugins", "embedded", "demo", "hello"):
        assert f"  {name} " in out
    # A plugin cannot replace a built-in command; it is told so.
    assert "Look at and cancel jobs" in out and "Tries to replace" not in out
    assert helped.stderr.strip() == "pmq: warning: plugin 'cli-greedy' tried to replace the command 'jobs'; ignored"
    assert ok(hello).strip() == "hello from cli-sample"
    assert ok(version).startswith("pmq, version")


def test_broken_plugin_does_not_break_help_or_builtin_commands(env):
    broken = {**env, "PMQ_PLUGINS": "cli-broken"}
    helped, listed, plugins = pmq_all(broken, ["--help"], ["jobs", "list"], ["plugins"])
    assert "Usage: pmq" in ok(helped)
    warnings = helped.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("pmq: warning: plugin commands are unavailable")
    assert "'cli-broken'" in warnings[0] and "broken on purpose" in warnings[0]
    assert ok(listed).strip() == "no jobs" and listed.stderr == ""  # built-in commands never load plugins
    assert "'cli-broken'" in error_line(plugins)


def test_plugins_lists_job_types_without_any_server(env):
    env = {**env, "PMQ_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "PMQ_REDIS_URL": "redis://127.0.0.1:1"}
    text, listed, unknown = pmq_all(env, ["plugins"], ["plugins", "--json"], ["plugins", "--plugins", "nosuch"])
    text = ok(text)
    assert "cli-sample (pmq-cli-sample 0.1)" in text
    assert "pmq_register_commands" in text and "pmq_register_job_types" in text
    assert "job type cli-echo: priority 30 (high band); sync; timeout 5s; retry up to 5 attempt(s)" in text
    assert "payload Echo" in text
    [info] = as_json(listed)
    assert info["name"] == "cli-sample" and info["distribution"] == "pmq-cli-sample" and info["version"] == "0.1"
    by_name = {jt["name"]: jt for jt in info["job_types"]}
    assert by_name["cli-doomed"]["retry"]["max_attempts"] == 2 and by_name["cli-doomed"]["band"] == "normal"
    assert "'nosuch' not installed" in error_line(unknown)


# -- schema ----------------------------------------------------------------------------


def test_db_upgrade_applies_then_reports_up_to_date(env, pmq_servers: Servers):
    name = f"pmq_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pmq_servers.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = pmq_servers.database_url.rsplit("/", 1)[0] + f"/{name}"
        env = {**env, "PMQ_DATABASE_URL": url}
        assert ok(pmq(env, "db", "upgrade")).splitlines() == [
            f"applied pmq_core {m.version:04d} {m.name}" for m in schema.core_migrations()]
        assert ok(pmq(env, "db", "upgrade")).strip() == "schema is up to date"
    finally:
        with psycopg.connect(pmq_servers.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- enqueue -----------------------------------------------------------------------------


def test_enqueue_prints_the_id_and_jobs_show_reads_it_back(env):
    job_id = ok(pmq(env, "enqueue", "cli-echo", '{"n": 1}', "--priority", "7", "--max-attempts", "2")).strip()
    shown, text = pmq_all(env, ["jobs", "show", job_id, "--json"], ["jobs", "show", job_id])
    job = as_json(shown)["job"]
    # handed to Redis by the producer itself (no worker runs here)
    assert job["id"] == job_id and job["queue_name"] == "cli-echo" and job["status"] == "migrated_to_redis"
    assert job["payload"] == {"n": 1} and job["priority"] == 7 and job["max_attempts"] == 2
    assert as_json(shown)["logs"] == []
    assert "7 (high band)" in ok(text) and "0 of 2" in text.stdout and "no attempts yet" in text.stdout


def test_enqueue_schedules_with_delay_or_an_aware_time(env):
    before = datetime.now(UTC)
    later, at, naive, vague, both = pmq_all(
        env, ["enqueue", "cli-echo", '{"n": 1}', "--delay", "3600"],
        ["enqueue", "cli-echo", '{"n": 2}', "--at", "2030-01-02T03:04:05+01:00"],
        ["enqueue", "cli-echo", "{}", "--at", "2030-01-02T03:04:05"],
        ["enqueue", "cli-echo", "{}", "--at", "soon"],
        ["enqueue", "cli-echo", "{}", "--delay", "1", "--at", "2030-01-02T03:04:05Z"])
    run_at = {j["id"]: datetime.fromisoformat(j["run_at"]) for j in as_json(pmq(env, "jobs", "list", "--json"))}
    assert run_at[ok(later).strip()] >= before + timedelta(seconds=3590)
    assert run_at[ok(at).strip()] == datetime(2030, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert "has no time zone" in error_line(naive, 2)
    assert "not an ISO 8601 time" in error_line(vague, 2)
    assert "--delay or --at" in error_line(both, 2)
    assert job_count(env) == 2


def test_enqueue_refuses_bad_input_and_writes_nothing(env, tmp_path):
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text('{"n": 1}\n' * 10)
    malformed, not_object, invalid, unknown, unknown_bulk, neither = pmq_all(
        env, ["enqueue", "cli-echo", '{"n": '], ["enqueue", "cli-echo", "[1, 2]"],
        ["enqueue", "cli-echo", '{"n": "x"}'], ["enqueue", "nosuch", "{}"],
        ["enqueue", "nosuch", "--file", str(jobs_file)], ["enqueue", "cli-echo"])
    assert "malformed JSON" in error_line(malformed, 2)
    assert "must be a JSON object" in error_line(not_object, 2)
    assert "invalid payload for 'cli-echo'" in error_line(invalid)
    assert "unknown queue 'nosuch'" in error_line(unknown)
    assert "unknown queue 'nosuch'" in error_line(unknown_bulk)
    assert "not both and not neither" in error_line(neither, 2)
    assert job_count(env) == 0


def test_enqueue_file_writes_every_line_in_batches(env, tmp_path):
    jobs_file = tmp_path / "jobs.jsonl"
    # Blank lines are skipped; U+2028 inside a JSON string is not a line break.
    jobs_file.write_text("".join(f'{{"n": {i}, "note": "a\u2028b"}}\n' + ("\n" if i == 5 else "")
                                 for i in range(2500)), encoding="utf-8")
    result = pmq(env, "enqueue", "cli-echo", "--file", str(jobs_file))
    assert ok(result).strip() == "enqueued 2500 job(s) on cli-echo"
    assert "enqueueing" in result.stderr  # the progress bar
    assert job_count(env) == 2500


def test_enqueue_file_with_a_bad_line_enqueues_nothing(env, tmp_path):
    cases = {
        '{"n": 2': "malformed JSON",
        '"just text"': "a payload must be a JSON object",
        '{"n": "two"}': "invalid payload for 'cli-echo'",
    }
    commands = []
    for index, bad_line in enumerate(cases):
        jobs_file = tmp_path / f"jobs{index}.jsonl"
        jobs_file.write_text('{"n": 0}\n\n' + bad_line + "\n" + '{"n": 3}\n' * 1500)
        commands.append(["enqueue", "cli-echo", "--file", str(jobs_file)])
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"n": 1}\n{"n": "\xff"}\n')
    commands.append(["enqueue", "cli-echo", "--file", str(binary)])
    *results, not_text = pmq_all(env, *commands)
    for index, (result, expected) in enumerate(zip(results, cases.values(), strict=True)):
        line = error_line(result)
        assert f"jobs{index}.jsonl line 3: {expected}" in line and "nothing was enqueued" in line
    assert "binary.jsonl is not UTF-8 text" in error_line(not_text)
    assert job_count(env) == 0


def test_a_payload_nested_too_deep_is_one_line_whatever_its_depth(env):
    far_too_deep = '{"a":' * 10_000 + "1" + "}" * 10_000
    one_too_deep = '{"a":' * 32 + "{}" + "}" * 32  # 33 levels: the decoder takes it, the check does not
    at_the_limit = '{"a":' * 31 + "{}" + "}" * 31
    decoder, check, fine = pmq_all(env, ["enqueue", "cli-doomed", far_too_deep],
                                   ["enqueue", "cli-doomed", one_too_deep], ["enqueue", "cli-doomed", at_the_limit])
    assert "a payload may be nested at most 32 levels deep" in error_line(decoder, 2)
    assert "is nested more than 32 levels deep" in error_line(check)
    assert uuid.UUID(ok(fine).strip())
    assert job_count(env) == 1


def test_enqueue_file_reads_no_line_beyond_its_limit(env, tmp_path):
    small = {**env, "PMQ_MAX_PAYLOAD_BYTES": "1000"}
    long_line = tmp_path / "long.jsonl"
    long_line.write_text('{"n": 1}\n{"n": 2, "note": "' + "x" * 5000 + '"}\n')
    just_fits = tmp_path / "fits.jsonl"
    just_fits.write_text('{"n": 1' + " " * (2000 - 8) + "}\n")  # 2,000 bytes before the line break, mostly blank
    zero, long, fits = concurrently(lambda: pmq(small, "enqueue", "cli-echo", "--file", "/dev/zero", timeout=30),
                                    lambda: pmq(small, "enqueue", "cli-echo", "--file", str(long_line)),
                                    lambda: pmq(small, "enqueue", "cli-echo", "--file", str(just_fits)))
    assert "zero line 1: longer than 2000 bytes (twice max_payload_bytes)" in error_line(zero)
    assert "long.jsonl line 2: longer than 2000 bytes" in error_line(long)
    assert ok(fits).strip() == "enqueued 1 job(s) on cli-echo"
    assert job_count(env) == 1


def test_enqueue_file_with_a_bad_line_after_the_first_batch_enqueues_nothing(env, tmp_path):
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text('{"n": 1}\n' * 2500 + '{"n": "late"}\n')
    result = pmq(env, "enqueue", "cli-echo", "--file", str(jobs_file))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # The progress bar's label came first: the error is the last line, and the only error.
    *progress, line = result.stderr.strip().splitlines()
    assert progress == ["enqueueing"]
    assert "jobs.jsonl line 2501: invalid payload for 'cli-echo'" in line and "nothing was enqueued" in line
    assert job_count(env) == 0


# -- jobs and queues ---------------------------------------------------------------------


def test_jobs_list_filters_and_cancel(env, client):
    first = str(client.enqueue("cli-echo", {"n": 1}, delay=600))
    second = str(client.enqueue("cli-doomed", {}, delay=600))
    listed, by_queue, limited, text, unknown, bogus = pmq_all(
        env, ["jobs", "list", "--json"], ["jobs", "list", "--queue", "cli-echo", "--json"],
        ["jobs", "list", "--limit", "1", "--json"], ["jobs", "list"],
        ["jobs", "list", "--queue", "nosuch"], ["jobs", "list", "--status", "bogus"])
    assert {j["id"] for j in as_json(listed)} == {first, second}
    assert [j["id"] for j in as_json(by_queue)] == [first]
    assert len(as_json(limited)) == 1
    assert ok(text).splitlines()[0].split()[:3] == ["ID", "QUEUE", "STATUS"] and first in text.stdout
    assert "unknown queue 'nosuch'" in error_line(unknown)
    assert "'--status'" in error_line(bogus, 2)

    assert ok(pmq(env, "jobs", "cancel", first)).strip() == f"cancelled job {first} (it was queued)"
    cancelled, again = pmq_all(env, ["jobs", "list", "--status", "cancelled", "--json"], ["jobs", "cancel", first])
    assert [j["id"] for j in as_json(cancelled)] == [first]
    assert "already finished (cancelled)" in ok(again)
    assert statuses(env, [first, second]) == ["cancelled", "queued"]


def test_missing_or_malformed_job_ids_are_one_line_errors(env):
    missing = str(uuid.uuid4())
    shown, cancelled, malformed = pmq_all(env, ["jobs", "show", missing], ["jobs", "cancel", missing],
                                          ["jobs", "show", "nope"])
    assert f"no job with id {missing}" in error_line(shown)
    assert f"no job with id {missing}" in error_line(cancelled)
    assert "'nope' is not a job id" in error_line(malformed)


def test_queues_list_pause_and_resume(env, client):
    client.enqueue("cli-echo", {"n": 1}, delay=600)
    [queue] = as_json(pmq(env, "queues", "list", "--json"))
    assert queue["name"] == "cli-echo" and queue["is_active"] is True
    assert (queue["waiting"], queue["scheduled"]) == (0, 1)
    assert queue["bands"] == {"high": 0, "normal": 0, "low": 0}
    paused, unknown = pmq_all(env, ["queues", "pause", "cli-echo"], ["queues", "pause", "nosuch"])
    assert ok(paused).strip() == "paused cli-echo"
    assert "unknown queue 'nosuch'" in error_line(unknown)
    assert "paused" in ok(pmq(env, "queues", "list")).splitlines()[1]
    assert ok(pmq(env, "queues", "resume", "cli-echo")).strip() == "resumed cli-echo"
    assert as_json(pmq(env, "queues", "list", "--json"))[0]["is_active"] is True


# -- running jobs ------------------------------------------------------------------------


def test_run_serves_jobs_and_stops_cleanly_on_sigterm(env, spawn, client):
    runtime = spawn(env, "run", "--concurrency", "4")
    done = client.enqueue("cli-echo", {"n": 5})
    dead = client.enqueue("cli-doomed", {})
    wait_for(env, [done, dead], ["completed", "failed"])
    report = pmq(env, "health", "--json")
    data = json.loads(report.stdout)
    assert report.returncode == {"healthy": 0, "warning": 1, "critical": 2}[data["status"]]
    assert data["status"] != "critical" and len(data["workers"]) == 1
    assert data["workers"][0]["concurrency"] == 4
    assert sorted(data["workers"][0]["queues"]) == ["cli-doomed", "cli-echo"]
    code, log = stop(runtime)
    assert code == 0, log
    assert "INFO" in log and "migrator leads" in log and "Traceback" not in log
    assert workers(env) == 0  # the worker unregistered on its way out


def test_worker_and_migrator_run_apart_and_stop_on_sigterm(env, spawn, client):
    migrator = spawn(env, "migrator")
    worker = spawn(env, "worker", "--queues", "cli-echo")
    job_id = client.enqueue("cli-echo", {"n": 1})
    wait_for(env, [job_id], ["completed"])
    for process in (worker, migrator):
        code, log = stop(process)
        assert code == 0, log
        assert "Traceback" not in log
    assert workers(env) == 0


def test_dead_letters_list_replay_and_purge(env, pmq_runtime, sample_plugin):
    rt = pmq_runtime(sample_plugin)
    first, second = rt.enqueue("cli-doomed", {}), rt.enqueue("cli-doomed", {})
    rt.wait_all([first, second])
    listed, text, other, unknown, none, two, stranger = pmq_all(
        env, ["dlq", "list", "--json"], ["dlq", "list", "--queue", "cli-doomed"],
        ["dlq", "list", "--queue", "cli-echo"], ["dlq", "list", "--queue", "nosuch"], ["dlq", "replay"],
        ["dlq", "purge", str(first), "--queue", "cli-doomed"], ["dlq", "replay", str(uuid.uuid4())])
    dead = as_json(listed)
    assert {row["id"] for row in dead} == {str(first), str(second)}
    assert all("can never succeed" in row["last_error_message"] for row in dead)
    assert str(first) in ok(text)
    assert ok(other).strip() == "no dead jobs"
    assert "unknown queue 'nosuch'" in error_line(unknown)
    for result in (none, two):
        assert "exactly one" in error_line(result, 2)
    assert "not dead letters" in error_line(stranger)

    assert ok(pmq(env, "dlq", "replay", str(first))).strip() == "replayed 1 dead job(s)"
    with psycopg.connect(env["PMQ_DATABASE_URL"]) as conn:
        def attempts() -> int:
            return conn.execute("SELECT count(*) FROM job_logs WHERE job_id = %s", (first,)).fetchone()[0]

        wait_until(attempts, lambda n: n >= 2, 30, "the replayed job did not run again")
    rt.wait_all([first, second])
    assert ok(pmq(env, "dlq", "purge", "--queue", "cli-doomed")).strip() == "purged 2 dead job(s)"
    assert ok(pmq(env, "dlq", "list")).strip() == "no dead jobs"
    assert statuses(env, [first, second]) == ["missing", "missing"]


def test_serving_needs_job_types_and_known_queues(env):
    nothing = {**env, "PMQ_PLUGINS": "cli-greedy"}  # a plugin with commands only
    results = pmq_all(nothing, ["worker"], ["run", "--plugins", "cli-greedy"], ["worker", "--plugins", "cli-sample",
                      "--queues", "cli-echo,nosuch"], ["run", "--plugins", "nosuch"], ["run", "--concurrency", "0"],
                      ["run", "--plugins", ""])
    no_types, no_types_either, unknown_queue, unknown_plugin, bad_concurrency, empty = results
    assert "no job types to serve" in error_line(no_types)
    assert "no job types to serve" in error_line(no_types_either)
    assert "'cli-broken'" in error_line(empty)  # an empty selection loads every installed plugin, as unset does
    assert "queue(s) nosuch" in error_line(unknown_queue)
    assert "plugin(s) 'nosuch' not installed" in error_line(unknown_plugin)
    assert "'--concurrency'" in error_line(bad_concurrency, 2)


# -- health and statistics -----------------------------------------------------------------


def test_health_reports_and_exits_with_its_verdict(env, client):
    client.enqueue("cli-echo", {"n": 1})
    report, text = pmq_all(env, ["health", "--json"], ["health"])
    data = json.loads(report.stdout)
    assert report.returncode == {"healthy": 0, "warning": 1, "critical": 2}[data["status"]]
    assert data["postgres"]["ok"] and data["redis"]["ok"]
    [queue] = data["queues"]
    assert queue["name"] == "cli-echo" and queue["waiting"] == 1 and queue["served"] is False
    # Waiting jobs that no live worker serves are worth a warning.
    assert data["status"] == "warning" and any("no live worker" in w for w in data["warnings"])
    assert text.returncode == 1
    assert "PostgreSQL" in text.stdout and "overall: warning" in text.stdout and "live workers: 0" in text.stdout


def test_health_is_critical_when_a_server_is_unreachable(env):
    pg_down, redis_down = concurrently(
        lambda: pmq({**env, "PMQ_DATABASE_URL": "postgresql://postgres:s3cret-pw@127.0.0.1:1/x"}, "health"),
        lambda: pmq({**env, "PMQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "health", "--json"))
    assert pg_down.returncode == 2, pg_down.stderr
    assert "overall: critical" in pg_down.stdout and "PostgreSQL is unreachable" in pg_down.stdout
    assert "s3cret-pw" not in pg_down.stdout + pg_down.stderr and "postgres:***@" in pg_down.stdout
    assert redis_down.returncode == 2 and json.loads(redis_down.stdout)["problems"] == ["Redis is unreachable"]


def test_stats_once_as_json_and_watching(env, client):
    client.enqueue("cli-echo", {"n": 1})
    once, watched, lines = pmq_all(env, ["stats", "--json"],
                                   ["stats", "--watch", "--interval", "0.05", "--iterations", "3"],
                                   ["stats", "--json", "--watch", "--interval", "0.05", "--iterations", "2"])
    data = as_json(once)
    assert data["created_per_minute"] == 1 and data["failed"] == 0 and data["active_workers"] == 0
    assert (data["utilisation"], data["claimed_ahead"]) == (0.0, 0)
    assert [q["name"] for q in data["queues"]] == ["cli-echo"] and data["queues"][0]["in_redis"] == 1
    assert ok(watched).count("processing time:") == 3 and "Ctrl-C to stop" in watched.stdout
    assert "0 job(s) claimed ahead of a free slot" in watched.stdout
    assert [json.loads(line)["window_minutes"] for line in ok(lines).splitlines()] == [1, 1]


# -- errors --------------------------------------------------------------------------------


def test_unreachable_servers_are_one_line_errors_without_passwords(env, client):
    client.enqueue("cli-echo", {"n": 1})  # a queue, so that listing queues asks Redis for its depth
    pg_down = {**env, "PMQ_DATABASE_URL": "postgresql://postgres:s3cret-pw@127.0.0.1:1/x"}
    redis_down = {**env, "PMQ_REDIS_URL": "redis://:red-pw@127.0.0.1:1/0"}
    for result in pmq_all(pg_down, ["jobs", "list"], ["dlq", "list"], ["db", "upgrade"]):
        line = error_line(result)
        assert "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/x" in line
        assert "s3cret-pw" not in result.stdout + result.stderr
    result = pmq(redis_down, "queues", "list")
    assert "Redis at redis://:***@127.0.0.1:1/0 is unavailable" in error_line(result)
    assert "red-pw" not in result.stderr


def test_enqueue_with_postgresql_down_fails_in_the_documented_time_in_one_line(env):
    refused = {**env, "PMQ_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = {**env, "PMQ_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x"}

        def timed(environ: dict[str, str]) -> tuple[Result[str], float]:
            started = time.monotonic()
            return pmq(environ, "enqueue", "cli-echo", '{"n": 1}'), time.monotonic() - started

        (at_once, quick), (after_wait, slow) = concurrently(lambda: timed(refused), lambda: timed(mute))
    # One line each (error_line checks it): no pool warnings ahead of it.
    assert "Connection refused; nothing was written" in error_line(at_once)
    assert "cannot connect to PostgreSQL" in error_line(after_wait) and "nothing was written" in error_line(after_wait)
    # A refusal is reported before the documented wait, a silent server after
    # it, not after libpq's own (unbounded) connect timeout; the margins are
    # the process's start-up on a loaded machine.
    assert quick < POOL_WAIT
    assert POOL_WAIT <= slow < POOL_WAIT + 10


def test_usage_and_configuration_errors_are_one_line(env):
    only_one = {k: v for k, v in env.items() if k != "PMQ_REDIS_URL"}
    unknown, bad_limit, missing, groups = pmq_all(env, ["nosuch"], ["jobs", "list", "--limit", "x"],
                                                  ["queues", "pause"], ["dlq"])
    assert "No such command 'nosuch'" in error_line(unknown, 2)
    assert "'--limit'" in error_line(bad_limit, 2)
    assert "Missing argument 'QUEUE'" in error_line(missing, 2)
    assert "replay" in ok(groups)  # a group alone shows its help
    bad_setting, half_configured = concurrently(lambda: pmq({**env, "PMQ_CONCURRENCY": "0"}, "jobs", "list"),
                                                lambda: pmq(only_one, "jobs", "list"))
    assert "concurrency" in error_line(bad_setting)
    assert "PMQ_REDIS_URL is not set" in error_line(half_configured)


# -- embedded servers ----------------------------------------------------------------------


def test_embedded_status_and_stop_when_nothing_runs(env, tmp_path):
    embedded_env = {k: v for k, v in env.items() if k not in ("PMQ_DATABASE_URL", "PMQ_REDIS_URL")}
    listed, text, stopped = pmq_all(embedded_env, ["embedded", "status", "--json"], ["embedded", "status"],
                                    ["embedded", "stop"])
    report = as_json(listed)
    assert report and all(not server["running"] and server["pid"] is None for server in report.values())
    assert all(server["data"].startswith(str((tmp_path / "embedded").resolve())) for server in report.values())
    assert "stopped" in ok(text)
    assert ok(stopped).strip() == "no embedded server was running"
