"""One run of one scenario against one library, measured: the benchmark's harness.

``python bench/harness.py <lib> <scenario>`` loads ``bench/adapters/bench_<lib>.py``
(the library's side, a few dozen lines each), prepares a fresh database and
a flushed Redis db, runs the scenario and prints one JSON line.
``python bench/harness.py <lib> worker`` is how the scenarios start a
library's worker processes (unless its adapter names its own command), and
``<lib> version`` prints the library's version and settings.

It runs under pmq's interpreter for pmq and under the peers' virtualenv for
the peers, so it needs nothing but ``redis`` and ``psycopg``. Everything is
configured by ``BENCH_*`` environment variables, which ``bench/run.py`` sets
(see :class:`Config`).

An adapter module defines ``NAME``, ``DIST``, ``BACKEND`` (``"redis"``,
``"pg"`` or ``"pg+redis"``), ``SETTINGS`` (a short description of how it is
configured), ``SCENARIOS`` (the ones it supports), and the functions
``open() -> state``, ``enqueue(state, payload, priority)``, optionally
``enqueue_bulk(state, payloads, priority, queue)``, ``close(state)``,
``setup()``, and ``worker()`` or ``worker_cmds(procs)``. Any of them may be
``async``. Handlers call :func:`record` (sync) or :func:`arecord` (async)
with the job's payload, after :func:`work` / :func:`awork` (the scenario's
simulated work, nothing for a no-op).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import costs
import redis

HERE = Path(__file__).resolve().parent
ADAPTERS = HERE / "adapters"


class Config:
    """The run's knobs, from the environment ``bench/run.py`` prepares."""

    n = int(os.environ.get("BENCH_N", "10000"))
    #: Jobs of the latency and priority scenarios' timed band, and their gap.
    lat_n = int(os.environ.get("BENCH_LAT_N", "300"))
    lat_gap = float(os.environ.get("BENCH_LAT_GAP", "0.010"))
    procs = int(os.environ.get("BENCH_PROCS", "2"))
    #: Worker slots (concurrency) the adapters configure; 10 unless a scenario says otherwise.
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    #: ``async`` or ``sync``: which handler a library that has both registers.
    handler = os.environ.get("BENCH_HANDLER", "async")
    #: Seconds of simulated I/O per job (the io scenario), 0 for a no-op.
    sleep = float(os.environ.get("BENCH_SLEEP", "0"))
    #: How many queues the jobs are spread over (the queues scenario).
    queues = int(os.environ.get("BENCH_QUEUES", "1"))
    #: Bytes of padding in each payload (the priority scenario's 1 KiB).
    pad = int(os.environ.get("BENCH_PAD", "0"))
    #: Seconds an enqueue loop or a drain may run before it is measured on the jobs done so far.
    cap = float(os.environ.get("BENCH_CAP", "8"))
    deadline = float(os.environ.get("BENCH_RUN_DEADLINE", "240"))
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    pg_admin = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", Path(tempfile.gettempdir()) / "pmq-bench-logs"))


CNT, FIRST, LAST, LAT = "bench:cnt", "bench:first", "bench:last", "bench:lat"
STARTED = time.time()

# -- the handlers' side ---------------------------------------------------------------

_sync_redis: redis.Redis | None = None
_async_redis: Any = None


def redis_client() -> redis.Redis:
    global _sync_redis
    if _sync_redis is None:
        _sync_redis = redis.Redis.from_url(Config.redis_url)
    return _sync_redis


def work() -> None:
    """The scenario's simulated work in a sync handler (a blocking wait)."""
    if Config.sleep:
        time.sleep(Config.sleep)


async def awork() -> None:
    """The scenario's simulated work in an async handler."""
    if Config.sleep:
        await asyncio.sleep(Config.sleep)


def record(payload: dict[str, Any]) -> None:
    """Note that a job ran: its latency if it carries an enqueue time
    ``t``, else a count, with the times of the first and the Nth."""
    now = time.time()
    r = redis_client()
    if "t" in payload:
        r.rpush(LAT, now - payload["t"])
        return
    count = r.incr(CNT)
    if count == 1:
        r.set(FIRST, now)
    if count == Config.n:
        r.set(LAST, time.time())


async def arecord(payload: dict[str, Any]) -> None:
    """:func:`record` for async handlers, on one asyncio Redis client per process."""
    global _async_redis
    now = time.time()
    if _async_redis is None:
        import redis.asyncio

        _async_redis = redis.asyncio.Redis.from_url(Config.redis_url)
    if "t" in payload:
        await _async_redis.rpush(LAT, now - payload["t"])
        return
    count = await _async_redis.incr(CNT)
    if count == 1:
        await _async_redis.set(FIRST, now)
    if count == Config.n:
        await _async_redis.set(LAST, time.time())


def payload(n: int) -> dict[str, Any]:
    return {"n": n, "pad": "x" * Config.pad} if Config.pad else {"n": n}


# -- servers ----------------------------------------------------------------------------


def flush_redis() -> None:
    """Empty the run's own Redis db (FLUSHDB: that db only)."""
    redis.Redis.from_url(Config.redis_url).flushdb()


def pg_url(name: str) -> str:
    """The admin URL with database ``name`` (a URL: asyncpg takes no other form)."""
    return urlunsplit(urlsplit(Config.pg_admin)._replace(path=f"/{name}"))


def pg_admin(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(Config.pg_admin, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def pg_name(lib: str) -> None:
    """Name this run's database in ``BENCH_PG_DB`` and ``BENCH_PG_DSN``,
    before the adapter is imported (some read it at import)."""
    os.environ["BENCH_PG_DB"] = name = f"bench_{lib}_{os.getpid()}"
    os.environ["BENCH_PG_DSN"] = pg_url(name)


def pg_create(lib: str) -> None:
    """A fresh database for this run, named in ``BENCH_PG_DSN`` for the adapter."""
    pg_name(lib)
    name = os.environ["BENCH_PG_DB"]
    pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg_admin(f"CREATE DATABASE {name}")


def pg_drop() -> None:
    name = os.environ.get("BENCH_PG_DB")
    if name:
        pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- processes ------------------------------------------------------------------------


def load(lib: str) -> Any:
    sys.path[:0] = [str(HERE), str(ADAPTERS)]
    return importlib.import_module(f"bench_{lib}")


def worker_cmds(adapter: Any, lib: str, procs: int) -> list[list[str]]:
    if hasattr(adapter, "worker_cmds"):
        return adapter.worker_cmds(procs)
    return [[sys.executable, str(HERE / "harness.py"), lib, "worker"]] * procs


def spawn(cmds: list[list[str]]) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ADAPTERS), os.environ.get("PYTHONPATH", "")]))
    Config.log_dir.mkdir(parents=True, exist_ok=True)
    with (Config.log_dir / f"worker_{os.getpid()}.log").open("ab") as log:
        return [subprocess.Popen(argv, cwd=ADAPTERS, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                 stderr=log) for argv in cmds]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker's process group, SIGKILL what is left after 8 s."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 8
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


async def maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def wait_for(probe: Any, timeout: float, step: float = 0.02) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if probe():
            return True
        await asyncio.sleep(step)
    return bool(probe())


def remaining() -> float:
    return Config.deadline - (time.time() - STARTED)


async def fill(adapter: Any, state: Any, payloads: list[dict[str, Any]], priority: str = "normal") -> None:
    """Enqueue ``payloads`` (bulk where the library has it), spread
    round-robin over ``Config.queues`` queues."""
    for queue in range(Config.queues):
        share = payloads[queue::Config.queues]
        if hasattr(adapter, "enqueue_bulk"):
            await maybe(adapter.enqueue_bulk(state, share, priority, queue))
        else:
            for item in share:
                await maybe(adapter.enqueue(state, item, priority))


# -- scenarios ------------------------------------------------------------------------


async def s_enqueue(adapter: Any, bulk: bool = False) -> dict[str, Any]:
    state = await maybe(adapter.open())
    payloads = [payload(i) for i in range(Config.n)]
    started = time.perf_counter()
    done = Config.n
    if bulk:
        if not hasattr(adapter, "enqueue_bulk"):
            return {"rate": None, "note": "no bulk API"}
        await maybe(adapter.enqueue_bulk(state, payloads, "normal", 0))
    else:
        for index, item in enumerate(payloads):
            await maybe(adapter.enqueue(state, item, "normal"))
            if time.perf_counter() - started > Config.cap:
                done = index + 1
                break
    secs = time.perf_counter() - started
    await maybe(getattr(adapter, "close", lambda _: None)(state))
    result: dict[str, Any] = {"rate": done / secs, "secs": secs, "done": done}
    if done < Config.n:
        result["note"] = f"capped at {Config.cap:g} s: {done}/{Config.n} enqueued"
    return result


async def s_drain(adapter: Any, lib: str) -> dict[str, Any]:
    """N jobs enqueued, then the workers start: jobs/s from the first
    handler start to the last (or to the cap), CPU and PostgreSQL work per job."""
    state = await maybe(adapter.open())
    await fill(adapter, state, [payload(i) for i in range(Config.n)])
    await maybe(getattr(adapter, "close", lambda _: None)(state))
    r = redis_client()
    db = os.environ.get("BENCH_PG_DB")
    before = costs.pg_counters(db, pg_admin)
    spawned = time.time()
    procs = spawn(worker_cmds(adapter, lib, Config.procs))
    meter = costs.CpuMeter([p.pid for p in procs], Config.redis_url, db, pg_admin)
    try:
        await wait_for(lambda: int(r.get(CNT) or 0) > 0, min(60, remaining() - 20), 0.005)
        first_count = int(r.get(CNT) or 0)
        meter.begin()
        started = time.time()
        ok = await wait_for(lambda: int(r.get(CNT) or 0) >= Config.n,
                            min(Config.cap, remaining() - 20), 0.01)
        done_at = time.time()
        done = int(r.get(CNT) or 0)
        cpu = meter.end(done - first_count)
        timed = done - first_count
        peak_rss_kb = costs.peak_rss_kb([p.pid for p in procs])
    finally:
        stop(procs)
    first = float(r.get(FIRST) or 0)
    last = float(r.get(LAST) or 0) if ok else done_at
    result: dict[str, Any] = {
        "rate": done / (last - first) if first and last > first else None, "done": done,
        "secs": last - first if first else None, "startup_s": first - spawned if first else None,
        "worker_peak_rss_mb": round(peak_rss_kb / 1024, 1), **cpu,
        # A capped drain has written jobs it did not finish (moved to Redis, claimed): per job, only a whole one.
        **(costs.pg_work_per_job(before, costs.pg_counters(db, pg_admin), done) if ok else {})}
    if not ok:
        result["note"] = f"capped at {Config.cap:g} s: {done}/{Config.n} done"
    if cpu and started < done_at:
        result["cpu_window_rate"] = timed / (done_at - started)
    return result


async def s_latency(adapter: Any, lib: str, backlog: int = 0) -> dict[str, Any]:
    """One idle worker (or ``Config.procs`` behind a low-band backlog):
    ``lat_n`` jobs ``lat_gap`` apart, enqueue call to handler start."""
    r = redis_client()
    state = await maybe(adapter.open())
    if backlog:
        await fill(adapter, state, [payload(i) for i in range(backlog)], "low")
    procs = spawn(worker_cmds(adapter, lib, Config.procs if backlog else 1))
    try:
        if backlog:
            if not await wait_for(lambda: int(r.get(CNT) or 0) >= min(backlog, 100), 60):
                raise RuntimeError("the workers did not start on the backlog within 60 s")
        else:
            await maybe(adapter.enqueue(state, {"n": -1}, "normal"))
            if not await wait_for(lambda: int(r.get(CNT) or 0) >= 1, 60):
                raise RuntimeError("the worker did not run the warm-up job within 60 s")
            await asyncio.sleep(1.0)
        backlog_at_start = int(r.get(CNT) or 0)
        start = time.perf_counter()
        for i in range(Config.lat_n):
            delay = start + i * Config.lat_gap - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await maybe(adapter.enqueue(state, {**payload(i), "t": time.time()}, "high" if backlog else "normal"))
        ok = await wait_for(lambda: r.llen(LAT) >= Config.lat_n, min(60, remaining() - 20))
        backlog_done = int(r.get(CNT) or 0) - backlog_at_start
        window = time.perf_counter() - start
    finally:
        stop(procs)
        await maybe(getattr(adapter, "close", lambda _: None)(state))
    lats = sorted(float(x) * 1000 for x in r.lrange(LAT, 0, -1))
    if not lats:
        return {"p50": None, "p99": None, "note": "no latency samples"}

    def pct(q: float) -> float:
        return lats[min(len(lats) - 1, round(q * (len(lats) - 1)))]

    result: dict[str, Any] = {"p50": pct(0.50), "p99": pct(0.99), "max": lats[-1], "samples": len(lats)}
    if backlog:
        result.update(backlog_rate=backlog_done / window, backlog_left=backlog - int(r.get(CNT) or 0))
        if result["backlog_left"] <= 0:
            result["note"] = "the backlog ran out before the last timed job"
    if not ok:
        result["note"] = f"only {len(lats)}/{Config.lat_n} samples"
    return result


def run(lib: str, scenario: str) -> dict[str, Any]:
    pg_name(lib)
    adapter = load(lib)
    if "pg" not in adapter.BACKEND:
        del os.environ["BENCH_PG_DB"], os.environ["BENCH_PG_DSN"]
    if scenario not in adapter.SCENARIOS:
        return {"rate": None, "note": f"{scenario} not supported"}
    backlog = int(os.environ.get("BENCH_BACKLOG", "50000"))
    bodies = {
        "enqueue": lambda: s_enqueue(adapter), "bulk": lambda: s_enqueue(adapter, bulk=True),
        "drain": lambda: s_drain(adapter, lib), "sync": lambda: s_drain(adapter, lib),
        "queues": lambda: s_drain(adapter, lib), "io": lambda: s_drain(adapter, lib),
        "latency": lambda: s_latency(adapter, lib), "priority": lambda: s_latency(adapter, lib, backlog),
    }
    flush_redis()
    if "pg" in adapter.BACKEND:
        pg_create(lib)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("the run's deadline passed")))
    signal.alarm(int(Config.deadline) + 5)
    try:
        if hasattr(adapter, "setup"):
            adapter.setup()
        return asyncio.run(bodies[scenario]())
    finally:
        signal.alarm(0)
        pg_drop()
        flush_redis()


def describe(lib: str) -> dict[str, Any]:
    adapter = load(lib)
    return {"lib": adapter.NAME, "version": importlib.metadata.version(adapter.DIST), "backend": adapter.BACKEND,
            "settings": adapter.SETTINGS, "scenarios": sorted(adapter.SCENARIOS),
            "sync_handlers": getattr(adapter, "SYNC_HANDLERS", False)}


def main() -> None:
    lib, mode = sys.argv[1], sys.argv[2]
    if mode == "worker":
        running = load(lib).worker()
        if inspect.isawaitable(running):
            asyncio.run(running)
        return
    if mode == "version":
        print(json.dumps(describe(lib)), flush=True)
        return
    result = run(lib, mode)
    result.update(lib=lib, mode=mode, n=Config.n)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
