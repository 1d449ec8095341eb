"""The dashboard's pages at scale: fills a database of its own with
1,000,000 jobs by plain SQL (bench/dashboard.sql), serves the dashboard on
it, and times each page over HTTP (the median of several loads, the
server's query and rendering time as a browser waits for it).

    PMQ_DATABASE_URL=postgresql://.../postgres PMQ_REDIS_URL=redis://... \\
        python bench/dashboard_pages.py [--jobs 1000000] [--keep] [--reuse]

The database ``pmq_dashboard_bench`` is created on that server (dropped
first if it exists, and at the end unless ``--keep``; ``--reuse`` times the
one a ``--keep`` run left, upgraded to this pmq's schema). docs/dashboard.md
gives the figures.
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import psycopg
import uvicorn
from pmq_dashboard import create_app

from pmq_core import Admin, Settings

HERE = Path(__file__).parent
DATABASE = "pmq_dashboard_bench"
LOADS = 5


def statements() -> dict[str, str]:
    parts = re.split(r"^-- name: (\w+)\s*$", (HERE / "dashboard.sql").read_text(), flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def fill(settings: Settings, jobs: int) -> str:
    sql = statements()
    started = time.monotonic()
    with Admin(settings) as admin:
        admin.upgrade()
        for name in ("fill_queues", "fill_jobs", "fill_logs", "analyze"):
            admin.conn.execute(sql[name], {"count": jobs} if name == "fill_jobs" else None)
        (row,) = admin.conn.execute(sql["some_job"]).fetchall()
    print(f"filled {jobs:,} jobs in {time.monotonic() - started:.0f}s")
    return str(row["id"])


def reuse(settings: Settings) -> str:
    with Admin(settings) as admin:
        for migration in admin.upgrade():
            print(f"applied {migration.component} {migration.version:04d} {migration.name}")
        admin.conn.execute("ANALYZE jobs")
        (row,) = admin.conn.execute(statements()["some_job"]).fetchall()
    return str(row["id"])


def serve(settings: Settings) -> tuple[uvicorn.Server, str]:
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: Admin(settings)), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def deep(http: httpx.Client, path: str, pages: int) -> str:
    """The URL of the ``pages``-th page of a listing, following its links."""
    for _ in range(pages):
        found = re.search(r'class="next" href="([^"]+)"', http.get(path).text)
        if found is None:
            break
        path = found.group(1).replace("&amp;", "&")
    return path


def timed(http: httpx.Client, path: str) -> float:
    times = []
    for _ in range(LOADS):
        started = time.perf_counter()
        response = http.get(path)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--reuse", action="store_true", help="time the database a --keep run left")
    args = parser.parse_args()
    base = Settings.load()
    assert base.database_url, "set PMQ_DATABASE_URL"
    if not args.reuse:
        with psycopg.connect(base.database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DATABASE}")
    settings = attrs.evolve(base, database_url=with_database(base.database_url, DATABASE),
                            key_prefix="pmq-dashboard-bench:")
    try:
        job_id = reuse(settings) if args.reuse else fill(settings, args.jobs)
        server, url = serve(settings)
        with httpx.Client(base_url=url, timeout=60) as http:
            pages = {
                "overview (health of every queue)": "/",
                "throughput chart data (last hour)": "/api/throughput",
                "queue page, first page": "/queues/queue-1",
                "queue page, 200th page": deep(http, "/queues/queue-1", 200),
                "queue page, completed, 200th page": deep(http, "/queues/queue-1?status=completed", 200),
                "rare queue (1 job in 10,000), first page": "/queues/rare",
                "rare queue, 20th page": deep(http, "/queues/rare", 20),
                "queue page, error text filter (one match)": "/queues/queue-1?status=failed&error=job+500042",
                "queue page, time range (a day, 80 days ago)": "/queues/queue-1?since=" + _day(80),
                "dead letters, first page": "/dead",
                "dead letters, 200th page": deep(http, "/dead", 200),
                "dead letters of the rare queue": "/dead?queue=rare",
                "job page": f"/jobs/{job_id}",
                "workers": "/workers",
                "cron": "/cron",
            }
            results = [(name, timed(http, path)) for name, path in pages.items()]
        server.should_exit = True
        print(f"\n| page ({args.jobs:,} jobs) | median of {LOADS} loads |\n| --- | ---: |")
        for name, ms in results:
            print(f"| {name} | {ms:.0f} ms |")
    finally:
        if not args.keep:
            with psycopg.connect(base.database_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def _day(days_ago: int) -> str:
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) - timedelta(days=days_ago)
    return f"{start:%Y-%m-%dT%H:%M}&until={start + timedelta(days=1):%Y-%m-%dT%H:%M}"


if __name__ == "__main__":
    main()
