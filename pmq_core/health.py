"""The rules of `pmq health`: which facts about a deployment are problems
(verdict ``critical``), which are warnings, and the exit status of each
verdict.

:meth:`pmq_core.admin.Admin.health` gathers the facts, the very ones
``pmq health --json`` prints; the rules here are plain functions of them,
so each is tested on its own and the table in the docs has one place to
match. A rule names what it found in one sentence that says what it costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import redis

#: Seconds the oldest due job of a queue that no live worker serves may wait
#: before that is critical rather than a warning: long enough for a worker
#: to start (or an autoscaler to add one), short against any job's patience.
UNSERVED_CRITICAL_AFTER = 60.0
#: Oldest waiting job age (seconds) above which health says "warning".
OLD_JOB_WARNING = 300.0
#: Exit status of ``pmq health`` for each verdict.
EXIT_STATUS = {"healthy": 0, "warning": 1, "critical": 2}


@attrs.define
class Findings:
    """Problems (each makes the verdict critical) and warnings."""

    problems: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)

    @property
    def verdict(self) -> str:
        return "critical" if self.problems else "warning" if self.warnings else "healthy"


def judge(report: Mapping[str, Any], *, stale_after: float) -> Findings:
    """Every rule applied to a health report's facts. ``stale_after`` is how
    long (seconds) a leading migrator may go without a housekeeping round:
    the settings' ``rescue_after``, the same patience a worker gets."""
    found = Findings(warnings=list(report.get("redis_config", [])))
    if not report["postgres"]["ok"]:
        found.problems.append("PostgreSQL is unreachable")
    if not report["redis"]["ok"]:
        found.problems.append("Redis is unreachable")
    schema = report.get("schema")
    if schema is not None and not schema["ok"]:
        found.problems.append(_schema_problem(schema))
        return found  # the other facts could not be read
    if report["postgres"]["ok"]:
        _migrator(found, report["migrator"], report["queues"], stale_after)
        _workers(found, report["workers"])
        _queues(found, report["queues"])
    oldest = report.get("oldest_job_age")
    if oldest is not None and oldest > OLD_JOB_WARNING:
        found.warnings.append(f"the oldest waiting job has waited {oldest:.0f}s")
    return found


def _schema_problem(schema: Mapping[str, Any]) -> str:
    if not schema["installed"]:
        return "the database has no pmq schema: run `pmq db upgrade`"
    return (f"the database schema is older than this pmq ({', '.join(schema['pending'])} not applied): "
            "run `pmq db upgrade`")


def _migrator(found: Findings, leader: Mapping[str, Any] | None, queues: list[Mapping[str, Any]],
              stale_after: float) -> None:
    """No leader: critical while jobs wait in PostgreSQL (nothing moves them
    to Redis), else a warning (scheduled jobs, retries and rescues will not
    happen). A leader silent for ``stale_after`` seconds: critical."""
    waiting = sum(q["waiting"] - q["in_redis"] for q in queues if q["active"])
    if leader is None:
        costs = "scheduled jobs, retries and rescues wait, and lost Redis messages are not handed over again"
        if waiting:
            found.problems.append(f"no migrator leads: {waiting} due job(s) wait in PostgreSQL and nothing moves "
                                  f"them to Redis; {costs} (is a migrator running, and can it reach Redis?)")
        else:
            found.warnings.append(f"no migrator leads: {costs} (is a migrator running, and can it reach Redis?)")
        return
    who = f"the leading migrator ({_where(leader)})"
    if leader["beat_age"] is None:
        found.warnings.append(f"{who} has written no liveness beat yet (just elected, or an older pmq?)")
    elif leader["beat_age"] > stale_after:
        found.problems.append(f"{who} holds the lead but has not finished a housekeeping round for "
                              f"{leader['beat_age']:.0f}s: it is wedged, and nothing moves jobs to Redis, "
                              "rescues or retries them")


def _workers(found: Findings, workers: list[Mapping[str, Any]]) -> None:
    """A live worker that cannot reach Redis: a warning (its queues' rule
    says whether anyone else serves them)."""
    for w in workers:
        if not w["redis_ok"]:
            found.warnings.append(f"worker {_where(w)} cannot reach Redis (for {w['redis_error_age']:.0f}s: "
                                  f"{w['redis_error']}): it takes no jobs")


def _queues(found: Findings, queues: list[Mapping[str, Any]]) -> None:
    """An active queue with due jobs and no live worker that reaches Redis
    serving it: critical when every worker serving it is deaf to Redis, or
    when none serves it and its oldest due job has waited
    :data:`UNSERVED_CRITICAL_AFTER` seconds; a warning while those jobs are
    younger."""
    for q in queues:
        if not q["active"] or not q["waiting"] or q["served"]:
            continue
        name, waiting = q["name"], q["waiting"]
        if q["workers"]:
            found.problems.append(f"queue {name!r} has {waiting} due job(s) and every live worker serving it "
                                  f"({q['workers']}) cannot reach Redis: none of them runs")
            continue
        message = (f"queue {name!r} has {waiting} waiting job(s) and no live worker serves it "
                   "(is its plugin loaded on a worker?)")
        age = q["oldest_age"] or 0.0
        if age >= UNSERVED_CRITICAL_AFTER:
            found.problems.append(f"{message}; the oldest has waited {age:.0f}s")
        else:
            found.warnings.append(message)


def _where(process: Mapping[str, Any]) -> str:
    if process.get("hostname") is None:
        return f"PostgreSQL backend {process['backend_pid']}"
    return f"{process['hostname']} pid {process['pid']}"


def redis_warnings(rds: redis.Redis) -> list[str]:
    """What in this Redis's configuration costs pmq time after a mishap."""
    try:
        config = rds.config_get("maxmemory-policy")
        config.update(rds.config_get("save"))
        config.update(rds.config_get("appendonly"))
    except redis.ResponseError:
        return []  # CONFIG is disabled (managed Redis): nothing to say
    found = []
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        found.append(f"Redis maxmemory-policy is {policy!r}: under memory pressure it may evict job messages; "
                     "nothing is lost (PostgreSQL holds every job) but evicted jobs wait "
                     "for the migrator's resync (seconds) - set it to 'noeviction'")
    if not config.get("save") and config.get("appendonly") == "no":
        found.append("Redis keeps nothing on disk: after a restart every job waiting in Redis is "
                     "handed over again from PostgreSQL (nothing is lost, but the resync takes a moment)")
    return found
