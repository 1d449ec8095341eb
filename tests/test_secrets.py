"""Passwords in server URLs never reach a terminal or a log.

A corpus of URLs, malformed and well-formed, each holding a password of its
own, is given to every command that touches a server. A malformed URL must
end each command with one error line naming the setting; a well-formed one
runs the command for real (against this machine's servers, where the
password is ignored or refused) or fails on an unreachable port. Whatever
happens, no form of the password (as written or percent-decoded) appears in
stdout, stderr or the log. Most commands run in this process through
``pmq``'s entry point (quick); the long-running ones run as real processes,
since their children and signal handling matter.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import assume, given, settings

from pmq_core import ConfigurationError, Settings, redaction
from pmq_core.admin import Admin
from pmq_core.cli import main
from pmq_core.config import configured_urls
from pmq_core.plugins import Plugins
from pmq_core.redaction import MASK, redact_url
from pmq_core.testing import FAST, Servers, wait_until
from tests.reliability_support import sql

QUEUE = "webhook:process"
PAYLOAD = '{"url": "http://127.0.0.1:9/hook", "body": {}}'


@attrs.frozen
class Shape:
    """A URL shape: the database and Redis URLs as templates over the real
    servers' ``{user}``, ``{host}``, ``{port}``, ``{db}`` and ``{redis}``
    (host:port/db), the passwords they hold, and the setting a malformed
    one must be reported under (None: well-formed)."""

    name: str
    database_url: str
    redis_url: str = "redis://{redis}"
    secrets: tuple[str, ...] = ()
    bad: str | None = None
    redis_mode: str = "standalone"


SHAPES = [
    # Malformed: refused before any library sees them.
    Shape("bracket", "postgresql://{user}:SuperSecret123@[::1/db", secrets=("SuperSecret123",), bad="database_url"),
    Shape("space", "postgresql://{user}:Super Secret456@{host}:{port}/{db}", secrets=("Super Secret456",),
          bad="database_url"),
    Shape("at", "postgresql://{user}:pa@ss-Word789@{host}:{port}/{db}", secrets=("pa@ss-Word789",),
          bad="database_url"),
    Shape("several-at", "postgresql://{user}:x@y@Zecret-01@{host}:{port}/{db}", secrets=("x@y@Zecret-01",),
          bad="database_url"),
    Shape("slash", "postgresql://{user}:pa/ss-Word02@{host}:{port}/{db}", secrets=("pa/ss-Word02",),
          bad="database_url"),
    Shape("hash", "postgresql://{user}:pa#ss-Word03@{host}:{port}/{db}", secrets=("pa#ss-Word03",),
          bad="database_url"),
    Shape("question", "postgresql://{user}:pa?ss-Word04@{host}:{port}/{db}", secrets=("pa?ss-Word04",),
          bad="database_url"),
    Shape("colon-bad-port", "postgresql://{user}:pa:ss-Word05@{host}:5x32/{db}", secrets=("pa:ss-Word05",),
          bad="database_url"),
    Shape("unicode", "postgresql://{user}:pässwörd-06@{host}:{port}/{db}", secrets=("pässwörd-06",),
          bad="database_url"),
    Shape("bad-escape", "postgresql://{user}:pa%zzWord07@{host}:{port}/{db}", secrets=("pa%zzWord07",),
          bad="database_url"),
    Shape("query-space", "postgresql://{host}:{port}/{db}?user={user}&password=Query Secret08",
          secrets=("Query Secret08",), bad="database_url"),
    Shape("conninfo-unclosed", "host={host} port={port} dbname={db} password='Kv-Secret09",
          secrets=("Kv-Secret09",), bad="database_url"),
    Shape("redis-space", "postgresql://{user}@{host}:{port}/{db}", "redis://:red is-Secret10@{redis}",
          secrets=("red is-Secret10",), bad="redis_url"),
    Shape("rediss-at", "postgresql://{user}@{host}:{port}/{db}", "rediss://user:re@dis-Secret11@{redis}",
          secrets=("re@dis-Secret11",), bad="redis_url"),
    # Well-formed: the commands run (the servers ignore or refuse the password).
    Shape("plain", "postgresql://{user}:Plain-Secret12@{host}:{port}/{db}", secrets=("Plain-Secret12",)),
    Shape("encoded", "postgresql://{user}:Enc%40%2F%23%3F%20%C3%A4-13@{host}:{port}/{db}",
          secrets=("Enc%40%2F%23%3F%20%C3%A4-13", "Enc@/#? ä-13")),
    Shape("query", "postgresql://{host}:{port}/{db}?user={user}&password=Query-Secret14",
          secrets=("Query-Secret14",)),
    Shape("conninfo", "host={host} port={port} dbname={db} user={user} password='kv Secret\\'15'",
          secrets=("kv Secret\\'15", "kv Secret'15")),
    Shape("redis-password", "postgresql://{user}:Pg-Secret16@{host}:{port}/{db}",
          "redis://:Redis-Secret16@{redis}", secrets=("Pg-Secret16", "Redis-Secret16")),
    Shape("rediss-user", "postgresql://{user}@{host}:{port}/{db}", "rediss://user:Tls%2BSecret17@127.0.0.1:1/0",
          secrets=("Tls%2BSecret17", "Tls+Secret17")),
    Shape("unreachable", "postgresql://{user}:Far-Secret18@127.0.0.1:1/{db}", "redis://:Far-Redis19@127.0.0.1:1/0",
          secrets=("Far-Secret18", "Far-Redis19")),
    # Sentinels (none listening): the primary's password and the Sentinels' own.
    Shape("sentinel", "postgresql://{user}@{host}:{port}/{db}",
          "redis+sentinel://:Primary-Secret20@127.0.0.1:1,127.0.0.1:2/pmq/0?sentinel_password=Sent%26Secret21",
          secrets=("Primary-Secret20", "Sent%26Secret21", "Sent&Secret21"), redis_mode="sentinel"),
    Shape("sentinel-typo", "postgresql://{user}@{host}:{port}/{db}",
          "redis+sentinel://127.0.0.1:1/pmq/0?sentinel_pasword=Typo-Secret22", secrets=("Typo-Secret22",),
          bad="redis_url", redis_mode="sentinel"),
]

#: Every command that touches a server, run in this process; ``{id}`` is a job id.
COMMANDS = [
    ["db", "upgrade"], ["health"], ["health", "--json"], ["stats"], ["stats", "--json"],
    ["enqueue", QUEUE, PAYLOAD], ["jobs", "list"], ["jobs", "list", "--json"], ["jobs", "show", "{id}"],
    ["jobs", "show", "{id}", "--json"], ["queues", "pause", QUEUE], ["queues", "list", "--json"],
    ["dlq", "list"], ["dlq", "list", "--json"],
]


@pytest.fixture(scope="module")
def database(pmq_servers: Servers) -> Iterator[str]:
    """One database for the module, with the schema and the webhook queue."""
    url = pmq_servers.create_database()
    settings = attrs.evolve(pmq_servers.base, database_url=url, redis_url=pmq_servers.redis_url)
    host = Plugins(("webhook",))
    with Admin(settings) as admin:
        admin.upgrade(host)
        admin.register_job_types(host)
    yield url
    pmq_servers.drop_database(url)


def urls(shape: Shape, database_url: str, redis_url: str) -> dict[str, str]:
    pg, rds = urlsplit(database_url), urlsplit(redis_url)
    assert pg.password is None, "the corpus puts its own password in the URL"
    where = {"user": pg.username or "postgres", "host": pg.hostname or "127.0.0.1", "port": str(pg.port or 5432),
             "db": pg.path.lstrip("/"), "redis": f"{rds.hostname}:{rds.port or 6379}{rds.path or '/0'}"}
    return {"PMQ_DATABASE_URL": shape.database_url.format(**where), "PMQ_REDIS_URL": shape.redis_url.format(**where)}


def environment(shape: Shape, database: str, pmq_servers: Servers) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMQ_")}
    env.update(urls(shape, database, pmq_servers.redis_url or ""))
    env["PMQ_REDIS_MODE"] = shape.redis_mode
    env.update({"PMQ_PLUGINS": "webhook", "PMQ_WEBHOOK_SECRET": "not-under-test",
                "PMQ_KEY_PREFIX": f"pmqtest:{uuid.uuid4().hex[:8]}:"})
    env.update({f"PMQ_{name.upper()}": str(value) for name, value in FAST.items()})
    return env


def assert_hidden(shape: Shape, text: str) -> None:
    for secret in shape.secrets:
        assert secret not in text and unquote(secret) not in text, f"{shape.name}: password shown in {text!r}"


def assert_one_error_line(shape: Shape, err: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pmq: error: "), err
    assert shape.bad is not None
    assert shape.bad in lines[0] and f"PMQ_{shape.bad.upper()}" in lines[0], lines[0]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.name)
def test_no_command_shows_a_password_whatever_the_url(shape: Shape, database: str, pmq_servers: Servers,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    for key in [k for k in os.environ if k.startswith("PMQ_")]:
        monkeypatch.delenv(key)
    for key, value in environment(shape, database, pmq_servers).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    job_id = str(uuid.uuid4())
    for command in COMMANDS:
        if shape.name == "unreachable" and command[0] == "enqueue":
            continue  # waits out the pool's connect timeout: slow, and the same redaction as `jobs list`
        args = [part.replace("{id}", job_id) for part in command]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        out, err = capsys.readouterr()
        assert_hidden(shape, out + err)
        assert "Traceback" not in err, err
        if shape.bad is not None:
            assert exit_info.value.code == 1, (command, err)
            assert_one_error_line(shape, err)
        elif command == ["health", "--json"]:
            assert MASK in out, out  # the report shows where the servers are, passwords masked
        elif command[0] == "enqueue" and exit_info.value.code == 0:
            job_id = out.strip()
    assert_hidden(shape, caplog.text)


SERVING = {"worker": ["worker", "--concurrency", "2"], "migrator": ["migrator"],
           "run": ["run", "--processes", "2", "--concurrency", "2"]}


@pytest.mark.parametrize("role", SERVING)
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[15]], ids=lambda shape: shape.name)
def test_serving_processes_never_show_a_password(role: str, shape: Shape, database: str, pmq_servers: Servers,
                                                 tmp_path: Path) -> None:
    """Workers, migrators and ``pmq run`` with its worker processes: a
    malformed URL is one error line; a good one serves until SIGTERM, and
    nothing any of its processes writes shows the password."""
    env = environment(shape, database, pmq_servers)
    since = sql(database, "SELECT now()")[0][0]
    process = subprocess.Popen([sys.executable, "-m", "pmq_core.cli", *SERVING[role]], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if shape.bad is None:
            wanted = {"worker": 1, "run": 2, "migrator": 1}[role]
            wait_until(lambda: (_serving(database, role, since), process.poll()),
                       lambda seen: seen[0] >= wanted or seen[1] is not None, 30, f"pmq {role} did not start serving")
            assert process.poll() is None, process.communicate()
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert_hidden(shape, out + err)
    assert "Traceback" not in err, err
    if shape.bad is not None:
        assert process.returncode == 1
        assert_one_error_line(shape, err)
    else:
        assert process.returncode == 0, err


def _serving(database: str, role: str, since: Any) -> int:
    """Workers that registered since ``since``, or for a migrator whether
    one holds the leader lock."""
    if role == "migrator":
        return sql(database, "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                             "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()")[0][0]
    return sql(database, "SELECT count(*) FROM pmq_workers WHERE started_at >= %s", (since,))[0][0]


def test_a_log_file_never_shows_a_password(tmp_path: Path) -> None:
    """Every record reaching a root handler is scrubbed, whichever library
    logged it, its arguments and its traceback included."""
    url = "postgresql://pmq:File%2FSecret@db.internal/pmq"
    handler = logging.FileHandler(tmp_path / "pmq.log")
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        redaction.remember([url])
        redaction.guard_logging()
        logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", "pool-1", f"conninfo {url}")
        try:
            raise ValueError("password=File/Secret rejected")
        except ValueError:
            logging.getLogger("pmq_core.worker").exception("unexpected: %s", unquote(url))
        logging.getLogger("pmq_core").warning("%s %s", "too few")  # arguments that do not fit
    finally:
        root.removeHandler(handler)
        handler.close()
    text = (tmp_path / "pmq.log").read_text()
    assert "error connecting in 'pool-1'" in text and "ValueError" in text and MASK in text
    assert "File%2FSecret" not in text and "File/Secret" not in text


PASSWORDS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(password=PASSWORDS, user=st.sampled_from(["", "pmq"]), scheme=st.sampled_from(["postgresql", "redis"]))
def test_redaction_and_checks_never_fail_nor_show_the_password(password: str, user: str, scheme: str) -> None:
    assume(password.strip("*"))  # a password of asterisks only is indistinguishable from the mask
    url = f"{scheme}://{user}:{password}@127.0.0.1:5432/db"
    shown = redact_url(url)
    assert password not in shown and unquote(password) not in shown
    setting = "database_url" if scheme == "postgresql" else "redis_url"
    try:
        loaded = Settings(**{setting: url})
    except ValueError as exc:  # Settings() raises the validator's error; load() wraps it
        message = str(exc)
        assert password not in message and unquote(password) not in message
        if password not in f"{setting} PMQ_{setting.upper()}":  # else masked there too
            assert f"{setting} (PMQ_{setting.upper()}" in message
    else:
        assert f"{setting}={shown!r}" in repr(loaded)


def test_a_malformed_url_in_a_file_is_named_and_its_password_still_known(tmp_path: Path) -> None:
    (tmp_path / "pmq.toml").write_text('redis_url = "redis://:a b@r/0"\n')
    with pytest.raises(ConfigurationError) as info:
        Settings.load(tmp_path, environ={})
    assert "redis_url" in str(info.value) and "a b" not in str(info.value)
    # The pmq command still learns the password, to hide it wherever it shows up.
    assert configured_urls(tmp_path, environ={}) == ["redis://:a b@r/0"]


def test_health_over_tls_to_a_redis_without_tls_ends(database: str, pmq_servers: Servers, tmp_path: Path) -> None:
    """The TLS handshake with a Redis that does not speak TLS never ends by
    itself: pmq's operator commands bound it."""
    shape = Shape("rediss-plain", "postgresql://{user}@{host}:{port}/{db}", "rediss://user:Tls-Secret20@{redis}",
                  secrets=("Tls-Secret20",))
    result = subprocess.run([sys.executable, "-m", "pmq_core.cli", "health", "--json"], cwd=tmp_path,
                            env=environment(shape, database, pmq_servers), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert '"ok": false' in result.stdout and "Traceback" not in result.stderr
    assert_hidden(shape, result.stdout + result.stderr)
