"""Admin commands tell the truth, run as real ``pmq`` processes.

With Redis unreachable, an action whose change PostgreSQL committed exits 0,
says what it left undone in Redis and what makes up for it, and that
really happens once Redis is back. Before `pmq db upgrade`, every command
says to run it, in one line, and `pmq health` is critical.
"""

from __future__ import annotations

import json
import logging
import uuid

import psycopg
import redis

from pmq_core.keys import Keys
from pmq_core.testing import wait_until
from tests import reliability_support, test_cli, test_health
from tests.reliability_support import redis_of, sql
from tests.test_cli import error_line, ok, pmq, pmq_all, statuses

own_valkey = reliability_support.own_valkey
env, plugin_dir, sample_plugin = test_cli.env, test_cli.plugin_dir, test_cli.sample_plugin
empty_database = test_health.empty_database


def warnings_of(result) -> list[str]:
    """The warning lines of a command that succeeded."""
    ok(result)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("pmq: warning: ") for line in lines), result.stderr
    return lines


# -- before `pmq db upgrade` -------------------------------------------------------------------


def test_before_db_upgrade_every_command_says_to_run_it_and_health_is_critical(env, empty_database):
    bare = {**env, "PMQ_DATABASE_URL": empty_database}
    job = str(uuid.uuid4())
    commands = [["jobs", "list"], ["jobs", "show", job], ["jobs", "cancel", job], ["queues", "list"],
                ["queues", "pause", "cli-echo"], ["queues", "resume", "cli-echo"], ["dlq", "list"],
                ["dlq", "replay", "--all"], ["dlq", "purge", "--queue", "cli-echo"], ["stats"],
                ["enqueue", "cli-echo", '{"n": 1}'], ["worker"], ["run"], ["migrator"]]
    *results, health = pmq_all(bare, *commands, ["health"])
    for command, result in zip(commands, results, strict=True):
        line = error_line(result)
        assert "run `pmq db upgrade`" in line, (command, line)
        assert "relation" not in line or "pmq schema" in line, (command, line)
    assert health.returncode == 2, health.stdout + health.stderr
    assert "the database has no pmq schema: run `pmq db upgrade`" in health.stdout
    assert "overall: critical" in health.stdout

    assert "applied pmq_core 0007 liveness" in ok(pmq(bare, "db", "upgrade"))
    after = pmq(bare, "health", "--json")
    assert as_json_any(after)["schema"] == {"ok": True, "installed": True, "pending": []}
    assert after.returncode in (0, 1)


def as_json_any(result):
    """A health report, whatever its exit status."""
    return json.loads(result.stdout)


# -- Redis unreachable -----------------------------------------------------------------------


def test_with_redis_down_admin_commands_exit_0_and_what_they_defer_is_redone(env, pmq_runtime, sample_plugin,
                                                                             own_valkey, caplog):
    caplog.set_level(logging.WARNING, logger="pmq_core.migrator")
    rt = pmq_runtime(sample_plugin, redis_url=own_valkey.url)
    dead = rt.client.enqueue_many("cli-doomed", [{}] * 20)
    rt.wait_all(dead)
    waiting = rt.client.enqueue("cli-echo", {"n": 1}, delay=600)
    dead_key = Keys(rt.settings.key_prefix).dead("cli-doomed")
    with redis_of(rt.settings) as rds:
        wait_until(lambda: rds.llen(dead_key), lambda n: n == 20, 10, "the dead jobs were not listed in Redis")
    own_valkey.stop()  # gracefully: its data, the 20 listed dead jobs included, comes back on restart
    down = {**env, "PMQ_REDIS_URL": own_valkey.url}

    paused = pmq(down, "queues", "pause", "cli-doomed")  # first, so that replayed jobs wait
    replayed, cancelled, health = pmq_all(down, ["dlq", "replay", "--all"], ["jobs", "cancel", str(waiting)],
                                          ["health", "--json"])

    assert paused.stdout.strip() == "paused cli-doomed"
    [pause_note] = warnings_of(paused)
    assert "Redis is unreachable" in pause_note and "claim nothing" in pause_note
    assert replayed.stdout.strip() == "replayed 20 dead job(s)"
    [replay_note] = warnings_of(replayed)
    assert "the leading migrator rebuilds them from PostgreSQL on reaching Redis again" in replay_note
    assert cancelled.stdout.strip() == f"cancelled job {waiting} (it was queued)"
    [cancel_note] = warnings_of(cancelled)
    assert "status hash in Redis" in cancel_note and "not told to stop" not in cancel_note
    assert health.returncode == 2 and "Redis is unreachable" in as_json_any(health)["problems"]
    # PostgreSQL holds every change.
    assert statuses(env, dead) == ["queued"] * 20 and statuses(env, [waiting]) == ["cancelled"]
    assert sql(rt.settings.database_url, "SELECT is_active FROM job_queues WHERE name = 'cli-doomed'") == [(False,)]

    own_valkey.start()
    with redis_of(rt.settings) as rds:
        # The 20 ids came back with Redis's data; the migrator's rebuild removes them.
        wait_until(lambda: llen_once_loaded(rds, dead_key), lambda n: n == 0, 30,
                   "the dead-letter list was not rebuilt from PostgreSQL")
        assert "rebuilt the dead-letter list of 'cli-doomed' from PostgreSQL" in caplog.text
        assert statuses(env, dead) == ["queued"] * 20
        ok(pmq(down, "queues", "resume", "cli-doomed"))
        rt.wait_all(dead)
        listed = wait_until(lambda: sorted(i.decode() for i in rds.lrange(dead_key, 0, -1)),
                            lambda ids: ids == sorted(map(str, dead)), 30,
                            "the dead-letter list does not match PostgreSQL")
    assert len(listed) == 20


def llen_once_loaded(rds: redis.Redis, key: str) -> int | None:
    """The list's length, or None while a restarted Redis still loads its data."""
    try:
        return int(rds.llen(key))
    except redis.BusyLoadingError:
        return None


def test_messages_a_pause_could_not_remove_from_redis_claim_nothing(env, pmq_runtime, sample_plugin):
    rt = pmq_runtime(sample_plugin, worker=False)
    ids = rt.client.enqueue_many("cli-echo", [{"n": i} for i in range(5)])
    band = Keys(rt.settings.key_prefix).band("cli-echo", "high")
    with redis_of(rt.settings) as rds:
        wait_until(lambda: rds.llen(band), lambda n: n == 5, 10, "the jobs were not handed to Redis")
        paused = pmq({**env, "PMQ_REDIS_URL": "redis://127.0.0.1:1/0"}, "queues", "pause", "cli-echo")
        assert paused.stdout.strip() == "paused cli-echo" and len(warnings_of(paused)) == 1
        assert rds.llen(band) == 5 and statuses(env, ids) == ["queued"] * 5
        rt.start_worker()
        wait_until(lambda: rds.llen(band), lambda n: n == 0, 10, "the worker did not pop the stale messages")
    with psycopg.connect(env["PMQ_DATABASE_URL"]) as conn:
        attempts = conn.execute("SELECT sum(attempt_count) FROM jobs").fetchone()
    assert statuses(env, ids) == ["queued"] * 5 and attempts == (0,)
    assert ok(pmq(env, "queues", "resume", "cli-echo")).strip() == "resumed cli-echo"
    jobs = rt.wait_all(ids)
    assert [(job.status.value, job.attempt_count) for job in jobs] == [("completed", 1)] * 5
