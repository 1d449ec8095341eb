"""How a worker pops job messages from Redis.

On a single Redis (or one behind Sentinel) one ``BLMPOP`` takes every band
of every served queue, most urgent band first: a high-priority message of
any queue goes before a normal one of any other.

On a Redis Cluster a command may only take keys of one hash slot, and each
queue's keys are in its own slot (see :mod:`pmq_core.keys`). The worker
then pops each *slot group* (the served queues whose names hash to one
slot; usually one queue) apart, with a standing ``BLMPOP`` per group:

- within a group, order is as on a single Redis (band, then queue, then
  FIFO), so a queue's priority order holds;
- across groups there is no global priority order: a group's messages go
  as soon as its pop answers. An urgent job of one queue does not overtake
  a waiting normal job of another queue on another slot; within its own
  queue it does.
- no group starves another: each has its own pop standing, every pop is
  collected as soon as it answers, and each pop takes at most an equal
  share of the worker's free slots, so that a busy queue cannot take them
  all while another queue's messages wait.

Each group pops through a cluster client of its own, so that no two pops
share one: redis-py's asyncio cluster client, shared by concurrent blocking
commands, could drop a reply (and with it a popped message) while it
rediscovers the cluster.

Each pop is sized by the free slots when it is sent, and pops answer at
different times: a worker may so pop more than its free slots (at most its
room once more, plus one per group, since each pop takes at least one).
The jobs beyond are claimed ahead, as with prefetch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.crc import key_slot

from pmq_core.config import Settings
from pmq_core.db import aredis_client
from pmq_core.keys import BANDS, Keys


def pop_groups(keys: Keys, queues: list[str], cluster: bool) -> list[list[str]]:
    """The lists popped together by one command, each group's most urgent
    band first: every band of every queue in one group, or on a cluster one
    group per hash slot."""
    ordered = [keys.band(queue, band) for band in BANDS for queue in queues]
    if not cluster:
        return [ordered]
    groups: dict[int, list[str]] = {}
    for key in ordered:
        groups.setdefault(key_slot(key.encode()), []).append(key)
    return list(groups.values())


class Popper:
    """Pops messages for one worker from its groups of lists (see
    :func:`pop_groups`), each group through its client, blocking up to
    ``timeout`` seconds when none wait."""

    def __init__(self, clients: list[Any], groups: list[list[str]], timeout: float) -> None:
        self.clients = clients
        self.groups = groups
        self.timeout = timeout
        self._standing: dict[int, asyncio.Task[list[bytes]]] = {}  # group index -> its pop in flight

    @classmethod
    def open(cls, settings: Settings, client: Any, groups: list[list[str]], timeout: float) -> Popper:
        """A popper using ``client`` for a single group, else a cluster
        client per group (each used by one pop at a time)."""
        if len(groups) == 1:
            return cls([client], groups, timeout)
        assert settings.redis_url
        return cls([aredis_client(settings.redis_url, mode=settings.redis_mode) for _group in groups], groups, timeout)

    async def pop(self, free: int) -> list[bytes]:
        """Up to ``free`` messages (on a cluster, more when pops sent earlier
        answer too: see the module's docstring); none when the wait ran out. Raises the Redis error of a pop when no
        other pop brought messages."""
        if len(self.groups) == 1:
            return await self._pop(0, free)
        share = max(1, free // len(self.groups))
        for index in range(len(self.groups)):
            if index not in self._standing:
                self._standing[index] = asyncio.create_task(self._pop(index, share))
        await asyncio.wait(self._standing.values(), return_when=asyncio.FIRST_COMPLETED)
        return self._collect()

    async def close(self) -> list[bytes]:
        """Let the standing pops end (each within ``timeout``) and return
        what they popped, so that no message is dropped on the way out."""
        if self._standing:
            await asyncio.wait(self._standing.values())
        try:
            return self._collect()
        except Exception:  # stopping: a failed pop took nothing
            return []
        finally:
            if len(self.clients) > 1:  # the clients of its own
                for client in self.clients:
                    await client.aclose()

    def _collect(self) -> list[bytes]:
        messages: list[bytes] = []
        error: BaseException | None = None
        for index, task in list(self._standing.items()):
            if not task.done():
                continue
            del self._standing[index]
            if task.exception() is not None:
                error = task.exception()
            else:
                messages += task.result()
        if error is not None and not messages:
            raise error
        return messages

    async def _pop(self, index: int, count: int) -> list[bytes]:
        group = self.groups[index]
        popped = await self.clients[index].blmpop(self.timeout, len(group), *group, direction="LEFT", count=count)
        return list(popped[1]) if popped else []
