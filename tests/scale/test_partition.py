"""A network partition between hosts: migrators and workers run as
separate hosts (Linux network namespaces on this machine, made by the test,
with PostgreSQL and Redis on a server host of their own).

One worker host is cut off from both servers for longer than the rescue
window while it runs jobs, then healed. Its jobs must be rescued and run
elsewhere, its outcomes from the runs the partition overtook must not be
recorded over the jobs' new attempts, and no job may be lost.

The leading migrator's host is cut off: once PostgreSQL's keepalives end
its session (and its lock), the standby on another host leads; healed, the
old leader stands by. There is never more than one leader.

Needs root and network namespaces; where they are not allowed the test
skips and says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pmq_core import Client
from pmq_core.admin import Admin
from pmq_core.config import Settings
from pmq_core.plugins import Plugins
from pmq_core.testing import wait_until
from tests.scale.netns import Hosts, namespaces_allowed
from tests.scale.partition_host import QUEUE, Nap
from tests.scale.servers import postgres_binaries, server_binary

pytestmark = [pytest.mark.scale, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("w1", "w2")
CUT = "w1"
RESCUE_AFTER = 3.0
#: Seconds of silence after which PostgreSQL probes a client's connection
#: (then twice, a second apart, before it drops it).
KEEPALIVE_IDLE = 2
#: Jobs, and how long each runs: long enough that the cut-off host is
#: running some when it is cut. Rescued jobs come back as suspects, which a
#: worker runs one at a time: the hosts claim nothing ahead (prefetch 0),
#: so that the cut-off host holds no more than it runs.
JOBS, NAP = 40, 1.0


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    reason = namespaces_allowed()
    if reason:
        pytest.skip(reason)
    made = Hosts(["mig", "mig2", *WORKERS])
    try:
        made.create()
        yield made
    finally:
        made.remove()


@pytest.fixture
def servers(hosts: Hosts) -> Iterator[Settings]:
    """PostgreSQL and Redis on the server host; settings reaching them."""
    folder = Path(tempfile.mkdtemp(prefix="pmq-partition-"))
    binaries, user = postgres_binaries()
    assert user is not None  # root, checked by the hosts fixture
    shutil.chown(folder, user)
    data = folder / "pg"
    as_user = ["runuser", "-u", user, "--"]
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-locale", "-E", "UTF8"], check=True, capture_output=True)
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {hosts.subnet}.0/24 trust\n")
    # Keepalives end a cut-off client's session (and the locks it holds) in
    # about 4 s instead of Linux's two hours.
    options = (f"-p 5432 -c listen_addresses={hosts.server_address} -c unix_socket_directories='' -c fsync=off "
               f"-c tcp_keepalives_idle={KEEPALIVE_IDLE} -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2")
    redis_log = folder / "redis.log"
    redis_server = subprocess.Popen(hosts.command("srv", server_binary(),
                                                  "--bind", hosts.server_address, "--port", "6379", "--save", "",
                                                  "--appendonly", "no", "--protected-mode", "no",
                                                  "--logfile", str(redis_log)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pg_ctl = [*hosts.command("srv", *as_user, str(binaries / "pg_ctl")), "-D", str(data)]
    try:
        subprocess.run([*pg_ctl, "-w", "-l", str(data / "server.log"), "-o", options, "start"], check=True,
                       capture_output=True)
        yield Settings(database_url=f"postgresql://postgres@{hosts.server_address}:5432/postgres",
                       redis_url=f"redis://{hosts.server_address}:6379/0", key_prefix="partition:",
                       poll_interval=0.2, heartbeat_interval=0.5, rescue_after=RESCUE_AFTER,
                       redispatch_after=1.0, shutdown_grace=2.0, prefetch=0)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        redis_server.kill()
        redis_server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def host_processes() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    started: dict[str, subprocess.Popen[bytes]] = {}
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
        process.wait(10)


def start_host(hosts: Hosts, name: str, role: str, settings: Settings, files: dict[str, Path],
               log: Path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PMQ_")}
    env.update({f"PMQ_{field.upper()}": str(getattr(settings, field))
                for field in ("database_url", "redis_url", "key_prefix", "poll_interval", "heartbeat_interval",
                              "rescue_after", "redispatch_after", "shutdown_grace", "prefetch")})
    env.update({"PYTHONPATH": str(ROOT), "PARTITION_HOST": name, "PARTITION_CUT": CUT,
                "PARTITION_WINDOW": str(files["window"]), "PARTITION_RUNS": str(files["runs"])})
    with log.open("ab") as out:
        return subprocess.Popen(hosts.command(name, sys.executable, "-m", "tests.scale.partition_host", role),
                                env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def runs(path: Path) -> list[tuple[str, int, str, float, float]]:
    if not path.exists():
        return []
    return [(job, int(attempt), host, float(start), float(end))
            for job, attempt, host, start, end in (line.split() for line in path.read_text().splitlines())]


def test_a_cut_off_worker_loses_its_jobs_to_others_and_records_nothing_stale(
        hosts, servers, host_processes, tmp_path):
    settings = servers
    plugins = Plugins(None, [Nap()], entry_points=False)
    with Admin(settings) as admin:
        admin.upgrade(plugins)
        admin.register_job_types(plugins)
    files = {"window": tmp_path / "window", "runs": tmp_path / "runs"}
    for name, role in (("mig", "migrator"), *((worker, "worker") for worker in WORKERS)):
        host_processes[name] = start_host(hosts, name, role, settings, files, tmp_path / f"{name}.log")
    with psycopg.connect(settings.database_url, autocommit=True) as db, Client(settings, plugins=plugins) as client:
        pids = {worker: host_processes[worker].pid for worker in WORKERS}
        wait_until(lambda: db.execute("SELECT pid, id FROM pmq_workers").fetchall(),
                   lambda rows: {pid for pid, _id in rows} == set(pids.values()), 30, "the workers did not register")
        cut_id = db.execute("SELECT id FROM pmq_workers WHERE pid = %s", (pids[CUT],)).fetchone()[0]
        ids = client.enqueue_many(QUEUE, [{"seconds": NAP} for _ in range(JOBS)])
        held = wait_until(lambda: [row[0] for row in db.execute(
            "SELECT id FROM jobs WHERE status = 'running' AND worker_id = %s", (cut_id,))], bool, 30,
            f"{CUT} ran nothing")

        files["window"].write_text(f"cut {time.time()!r}\n")
        hosts.cut(CUT)
        cut_at = time.monotonic()
        # The others rescue the cut-off host's jobs and run them to the end.
        wait_until(lambda: db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'completed'",
                                      (held,)).fetchone()[0], lambda done: done == len(held), 60,
                   f"the jobs {CUT} held were not completed elsewhere")
        assert time.monotonic() - cut_at > RESCUE_AFTER
        with files["window"].open("a") as window:
            window.write(f"healed {time.time()!r}\n")
        hosts.heal(CUT)
        healed_at = time.monotonic()

        # Only the healed host is left to run the next jobs: once they are
        # done, its stale outcomes have been sent (before its first claim
        # after the heal: one round carries both) and refused.
        host_processes["w2"].terminate()
        assert host_processes["w2"].wait(30) == 0
        later = client.enqueue_many(QUEUE, [{"seconds": 0.1} for _ in range(10)])
        everything = [*ids, *later]
        wait_until(lambda: db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'completed'",
                                      (everything,)).fetchone()[0], lambda n: n == len(everything), 120,
                   "not every job completed")
        recovered, cut_for = round(time.monotonic() - healed_at, 1), round(healed_at - cut_at, 1)
        stale = db.execute("SELECT count(*) FROM job_logs WHERE log_message LIKE 'stale outcome%%'").fetchone()[0]
        failed = db.execute("SELECT count(*) FROM jobs WHERE status <> 'completed'").fetchone()[0]

    ran = runs(files["runs"])
    overtaken = {job for job, _attempt, host, start, end in ran if host == CUT and job in set(map(str, held))}
    elsewhere = {job for job, _attempt, host, *_ in ran if host != CUT}
    assert overtaken and overtaken <= elsewhere  # run on the cut-off host, and again on another
    assert {job for job, _attempt, host, *_ in ran if host == CUT} >= set(map(str, later))
    assert (stale, failed) == (0, 0)
    print(f"\npartition: {len(held)} job(s) held by the cut-off host were rescued and completed elsewhere; "
          f"{len(overtaken)} of them also ran to the end on it, and its outcomes were refused; cut off for "
          f"{cut_for}s, it ran jobs again {recovered}s after the heal")



def leader_pid(settings: Settings) -> int | None:
    """The pid of the migrator process holding the leader's lock, as
    `pmq health` sees it."""
    with Admin(settings) as admin:
        leader = admin.health()["migrator"]
    return leader["pid"] if leader else None


def test_a_cut_off_leader_loses_the_lead_to_a_standby_elsewhere_and_stands_by_when_healed(
        hosts, servers, host_processes, tmp_path):
    settings = servers
    plugins = Plugins(None, [Nap()], entry_points=False)
    with Admin(settings) as admin:
        admin.upgrade(plugins)
        admin.register_job_types(plugins)
    files = {"window": tmp_path / "window", "runs": tmp_path / "runs"}
    for name, role in (("mig", "migrator"), ("w2", "worker")):
        host_processes[name] = start_host(hosts, name, role, settings, files, tmp_path / f"{name}.log")
    first = host_processes["mig"].pid
    wait_until(lambda: leader_pid(settings), lambda pid: pid == first, 30, "the first migrator did not lead")
    host_processes["mig2"] = start_host(hosts, "mig2", "migrator", settings, files, tmp_path / "mig2.log")
    standby = host_processes["mig2"].pid
    with Client(settings, plugins=plugins) as client:
        # Scheduled jobs: only a leading migrator hands them to Redis.
        before = client.enqueue_many(QUEUE, [{} for _ in range(5)], delay=0.2)
        wait_until(lambda: {client.get_job(i).status.value for i in before}, lambda s: s == {"completed"}, 30,
                   "jobs did not run before the partition")
        hosts.cut("mig")
        cut_at = time.monotonic()
        wait_until(lambda: leader_pid(settings), lambda pid: pid == standby, 60, "the standby did not take the lead")
        took_over = round(time.monotonic() - cut_at, 1)
        during = client.enqueue_many(QUEUE, [{} for _ in range(5)], delay=0.2)
        wait_until(lambda: {client.get_job(i).status.value for i in during}, lambda s: s == {"completed"}, 30,
                   "jobs did not run under the new leader")
        hosts.heal("mig")
        after = client.enqueue_many(QUEUE, [{} for _ in range(5)], delay=0.2)
        wait_until(lambda: {client.get_job(i).status.value for i in after}, lambda s: s == {"completed"}, 30,
                   "jobs did not run after the heal")
    assert leader_pid(settings) == standby  # the healed one stands by
    assert host_processes["mig"].poll() is None  # and is still there to take over in turn
    print(f"\nmigrator partition: the standby led {took_over}s after the leader's host was cut off")
