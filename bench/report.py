"""The benchmark's JSON document as Markdown tables (``bench/run.py`` prints them).

``python bench/report.py results.json`` renders a saved document again.
"""

from __future__ import annotations

import json
import sys
from typing import Any

#: Cores of the PostgreSQL server the projection assumes.
PROJECTED_CORES = 16


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}×" if ours and theirs else "–"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def get(results: dict[str, Any], lib: str, key: str, metric: str) -> float | None:
    value = results.get(lib, {}).get(key, {}).get(metric)
    return value if isinstance(value, (int, float)) else None


def notes(results: dict[str, Any], lib: str) -> str:
    found = sorted({f"{key}: {n}" for key, row in results.get(lib, {}).items() for n in row.get("notes", [])
                    if "not supported" not in n and n != "no bulk API"})
    return "; ".join(found)


def render(document: dict[str, Any]) -> str:
    args, results, infos = document["args"], document["results"], document["libraries"]
    libs = list(results)
    peers = [lib for lib in libs if lib != "pmq"]
    out = [f"{args['reps']} interleaved repetition(s), medians; N={args['n']:,}; drain with "
           f"{args['drain_procs']} worker processes; {document['machine']['cpus']} CPUs, load before "
           f"{document['machine']['load_before'][0]:.2f}"
           + (f", after {document['machine']['load_after'][0]:.2f}; {document['minutes']:g} minutes"
              if "minutes" in document else ""), ""]
    out += ["Libraries and settings:", ""]
    out += [f"- {lib} {infos[lib]['version']} ({infos[lib]['backend']}): {infos[lib]['settings']}" for lib in libs]

    out += ["", "Throughput and latency (jobs/s; ms; CPU ms per job of the drain, every process involved)", ""]
    rows = []
    for lib in libs:
        rows.append([lib, fmt(get(results, lib, "enqueue", "rate")), fmt(get(results, lib, "bulk", "rate")),
                     fmt(get(results, lib, "drain", "rate")), fmt(get(results, lib, "latency", "p50"), 1),
                     fmt(get(results, lib, "latency", "p99"), 1), fmt(get(results, lib, "drain", "cpu_ms_total"), 3),
                     notes(results, lib)])
    out += table(["library", "enqueue 1-by-1", "bulk", "drain", "p50", "p99", "CPU ms/job", "notes"], rows)

    out += ["", "CPU per job of the drain, ms (workers: every process of the workers' sessions; PostgreSQL: the "
            "run database's backends; Redis: the whole server; machine: all busy CPU, for comparison)", ""]
    rows = [[lib] + [fmt(get(results, lib, "drain", f"cpu_ms_{k}"), 3)
                     for k in ("total", "workers", "pg", "redis", "machine")] for lib in libs]
    out += table(["library", "total", "workers", "PostgreSQL", "Redis", "machine"], rows)

    pg_libs = [lib for lib in libs if "pg" in infos[lib]["backend"]]
    if pg_libs:
        out += ["", f"PostgreSQL work per job of the drain, and the drain a {PROJECTED_CORES}-core PostgreSQL "
                "would allow at that CPU per job (WAL is the cluster's: other databases' writes count too)", ""]
        rows = []
        for lib in pg_libs:
            pg_ms = get(results, lib, "drain", "cpu_ms_pg")
            rows.append([lib] + [fmt(get(results, lib, "drain", f"pg_{k}_per_job"), 2)
                                 for k in ("commits", "rows", "wal_bytes", "wal_records")]
                        + [fmt(pg_ms, 3), fmt(PROJECTED_CORES * 1000 / pg_ms if pg_ms else None)])
        out += table(["library", "commits", "rows written", "WAL bytes", "WAL records", "PG CPU ms",
                      f"jobs/s on {PROJECTED_CORES} cores"], rows)

    if "sync" in results.get("pmq", {}):
        sync_peers = [lib for lib in peers if infos[lib].get("sync_handlers")]
        out += ["", "Sync handlers: pmq's drain with a `def` handler, beside the peers whose handlers are plain "
                "functions (their drain)", ""]
        rows = [["pmq (def)", fmt(get(results, "pmq", "sync", "rate")),
                 fmt(get(results, "pmq", "sync", "cpu_ms_total"), 3)]]
        rows += [[lib, fmt(get(results, lib, "drain", "rate")), fmt(get(results, lib, "drain", "cpu_ms_total"), 3)]
                 for lib in sync_peers]
        out += table(["library", "drain jobs/s", "CPU ms/job"], rows)

    queue_keys = sorted((k for k in results.get("pmq", {}) if k.startswith("queues")), key=lambda k: int(k[6:]))
    if queue_keys:
        out += ["", "Many queues: pmq's drain with the jobs spread over Q queues, one worker set serving them all", ""]
        if "drain" in results["pmq"] and "queues1" not in queue_keys:
            queue_keys.insert(0, "drain")
        rows = [["1" if k == "drain" else k[6:], fmt(get(results, "pmq", k, "rate")),
                 fmt(get(results, "pmq", k, "cpu_ms_total"), 3)] for k in queue_keys]
        out += table(["queues", "drain jobs/s", "CPU ms/job"], rows)

    io_libs = [lib for lib in libs if "io" in results[lib]]
    if io_libs:
        ideal = document["io"]["ideal_rate"]
        out += ["", f"I/O-bound handlers: {document['io']['sleep_s'] * 1000:g} ms waits, one worker process with "
                f"{document['io']['concurrency']} slots; the ideal is {ideal:,.0f} jobs/s", ""]
        rows = [[lib, fmt(get(results, lib, "io", "rate")),
                 fmt(100 * (get(results, lib, "io", "rate") or 0) / ideal, 0) + " %",
                 fmt(get(results, lib, "io", "cpu_ms_total"), 3)] for lib in io_libs]
        out += table(["library", "jobs/s", "of the ideal", "CPU ms/job"], rows)

    prio_libs = [lib for lib in libs if "priority" in results[lib]]
    if prio_libs:
        out += ["", f"Priorities: high-band latency while a low-band backlog of {args['backlog']:,} drains "
                "(1 KiB payloads)", ""]
        rows = [[lib, fmt(get(results, lib, "priority", "p50"), 1), fmt(get(results, lib, "priority", "p99"), 1),
                 fmt(get(results, lib, "priority", "backlog_rate"))] for lib in prio_libs]
        out += table(["library", "high p50 ms", "high p99 ms", "backlog drained jobs/s"], rows)

    if "pmq" in results and peers:
        out += ["", "pmq ÷ peer (rates and CPU: pmq's figure over the peer's; above 1 is faster for rates, below "
                "1 is better for latencies and CPU)", ""]
        rows = []
        for lib in peers:
            rows.append([lib] + [ratio(get(results, "pmq", key, m), get(results, lib, key, m)) for key, m in (
                ("enqueue", "rate"), ("bulk", "rate"), ("drain", "rate"), ("latency", "p50"), ("latency", "p99"),
                ("drain", "cpu_ms_total"), ("io", "rate"), ("priority", "p50"), ("priority", "p99"))]
                + [ratio(get(results, "pmq", "sync", "rate"), get(results, lib, "drain", "rate"))
                   if infos[lib].get("sync_handlers") else "–"])
        out += table(["peer", "enqueue", "bulk", "drain", "p50", "p99", "CPU/job", "io", "prio p50", "prio p99",
                      "sync drain"], rows)
    peak = get(results, "pmq", "drain", "worker_peak_rss_mb")
    if peak:
        out += ["", f"pmq worker peak RSS: {peak:.1f} MB"]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as saved:
        print(render(json.load(saved)))
