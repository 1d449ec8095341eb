"""Hosts on one machine: Linux network namespaces joined by a bridge, made
and removed by the test.

The bridge lives in the ``srv`` namespace (where the servers run, on the
bridge's address); every other host is a namespace with a veth pair into
the bridge, and the test process reaches the servers through a veth of its
own. Cutting a host is setting its veth's bridge end down: it loses the
servers and every other host at once, and gets them back when healed.
All addresses are in a /24 of 10.0.0.0/8 picked at random and unused here.
"""

from __future__ import annotations

import random
import subprocess
import uuid

import pytest

SERVER = "srv"


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def namespaces_allowed() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    probe = f"pmq-probe-{uuid.uuid4().hex[:6]}"
    result = ip("netns", "add", probe)
    if result.returncode != 0:
        return f"network namespaces are not allowed here ({result.stderr.strip() or 'ip netns add failed'})"
    ip("netns", "del", probe)
    return None


class Hosts:
    """Namespaces ``srv`` and ``hosts``, bridged; ``address(name)`` is a
    host's address, ``server_address`` the servers'."""

    def __init__(self, hosts: list[str]) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.subnet = self._free_subnet()
        self.hosts = hosts
        self._made: list[str] = []

    @staticmethod
    def _free_subnet() -> str:
        used = ip("-o", "addr").stdout + ip("route").stdout
        for _ in range(100):
            subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
            if f"{subnet}." not in used:
                return subnet
        pytest.skip("no free 10.x.y.0/24 subnet for the test's hosts")

    def ns(self, name: str) -> str:
        return f"pmq{self.tag}-{name}"

    def _veth(self, name: str) -> tuple[str, str]:
        """The host end and the bridge end of a host's veth (15 characters at most)."""
        return f"p{self.tag}{name[:4]}h", f"p{self.tag}{name[:4]}b"

    @property
    def server_address(self) -> str:
        return f"{self.subnet}.1"

    def address(self, name: str) -> str:
        return f"{self.subnet}.{10 + self.hosts.index(name)}" if name in self.hosts else f"{self.subnet}.254"

    def create(self) -> None:
        server = self.ns(SERVER)
        self._run("netns", "add", server)
        self._made.append(server)
        self._in(server, "link", "set", "lo", "up")
        self._in(server, "link", "add", "br0", "type", "bridge")
        self._in(server, "addr", "add", f"{self.server_address}/24", "dev", "br0")
        self._in(server, "link", "set", "br0", "up")
        for name in self.hosts:
            namespace = self.ns(name)
            self._run("netns", "add", namespace)
            self._made.append(namespace)
            self._in(namespace, "link", "set", "lo", "up")
            self._join(name, namespace)
        self._join("test", None)  # the test process itself, from the root namespace

    def _join(self, name: str, namespace: str | None) -> None:
        host_end, bridge_end = self._veth(name)
        self._run("link", "add", host_end, "type", "veth", "peer", "name", bridge_end)
        self._run("link", "set", bridge_end, "netns", self.ns(SERVER))
        self._in(self.ns(SERVER), "link", "set", bridge_end, "master", "br0")
        self._in(self.ns(SERVER), "link", "set", bridge_end, "up")
        if namespace is not None:
            self._run("link", "set", host_end, "netns", namespace)
            self._in(namespace, "addr", "add", f"{self.address(name)}/24", "dev", host_end)
            self._in(namespace, "link", "set", host_end, "up")
        else:
            self._run("addr", "add", f"{self.address(name)}/24", "dev", host_end)
            self._run("link", "set", host_end, "up")

    def cut(self, name: str) -> None:
        self._in(self.ns(SERVER), "link", "set", self._veth(name)[1], "down")

    def heal(self, name: str) -> None:
        self._in(self.ns(SERVER), "link", "set", self._veth(name)[1], "up")

    def command(self, name: str, *argv: str) -> list[str]:
        """``argv`` run inside host ``name``'s namespace."""
        return ["ip", "netns", "exec", self.ns(name), *argv]

    def remove(self) -> None:
        """Delete the namespaces (their veths go with them, the test's own too)."""
        for namespace in reversed(self._made):
            ip("netns", "del", namespace)
        ip("link", "del", self._veth("test")[0])

    def _run(self, *args: str) -> None:
        result = ip(*args)
        if result.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)}: {result.stderr.strip()}")

    def _in(self, namespace: str, *args: str) -> None:
        self._run("-n", namespace, *args)
