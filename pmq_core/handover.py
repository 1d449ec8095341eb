"""Handing freshly enqueued jobs to Redis from the producer.

A small enqueue on the client's own connection stores its due jobs as
already ``migrated_to_redis`` (see the ``insert_job`` query) and then pushes
their messages itself, so that a job reaches a worker one commit and one
migrator wake-up sooner. The push happens off the enqueueing path: the
enqueue returns at its commit, and the pushes of the enqueues made in the
meantime go to Redis in one script call.

Nothing depends on the push: a job whose message never arrives (Redis down,
the producer killed right after its commit) is found by the migrator's check
for lost messages and handed over again after ``redispatch_after``. After a
failure the producer stops storing jobs as handed over for a few seconds,
so that the migrator takes them at once rather than after that check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from typing import Any

from pmq_core import dispatch
from pmq_core.config import Settings
from pmq_core.db import aredis_client, redis_client
from pmq_core.keys import Keys

log = logging.getLogger(__name__)

#: Seconds a producer waits on Redis when handing jobs over.
TIMEOUT = 1.0
#: Seconds a producer leaves its jobs to the migrator after Redis failed it.
PAUSE = 5.0
#: Seconds ``close`` waits for the last pushes.
CLOSE_WAIT = 2.0

Rows = list[dict[str, Any]]


def handed(rows: Rows) -> Rows:
    """The inserted rows that were stored as handed to Redis."""
    return [row for row in rows if row["status"] == "migrated_to_redis"]


class _Base:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix, status_hashes=settings.status_mirror)
        self._paused_until = 0.0

    def active(self) -> bool:
        """Whether enqueues should store due jobs as handed over: when the
        settings allow it and Redis has not failed us a moment ago."""
        return self.settings.dispatch_on_enqueue and time.monotonic() >= self._paused_until

    def _failed(self, count: int, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + PAUSE
        log.warning("could not hand %d enqueued job(s) to Redis (%s); the migrator will, and takes new "
                    "jobs for the next %gs", count, exc, PAUSE)


class ThreadHandover(_Base):
    """For :class:`~pmq_core.client.Client`: one daemon thread per process
    pushes what enqueues hand it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._queue: queue.SimpleQueue[Rows | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, rows: Rows) -> None:
        rows = handed(rows)
        if not rows:
            return
        if self._thread is None or self._pid != os.getpid():  # none yet, or not in this (forked) process
            with self._lock:
                if self._thread is None or self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    self._pid = os.getpid()
                    self._thread = threading.Thread(target=self._run, name="pmq-handover", daemon=True)
                    self._thread.start()
        self._queue.put(rows)

    def close(self) -> None:
        """Push what is pending (waiting at most CLOSE_WAIT), then stop."""
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(CLOSE_WAIT)
        self._thread = None

    def _run(self) -> None:
        client: Any = None
        scripts: dispatch.Scripts | None = None
        stopping = False
        while not stopping:
            batch: Rows = []
            item = self._queue.get()
            while True:  # take everything queued meanwhile: one push for all
                if item is None:
                    stopping = True
                else:
                    batch += item
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if not batch:
                continue
            try:
                if scripts is None:
                    client = redis_client(self.settings.redis_url or "", timeout=TIMEOUT, mode=self.settings.redis_mode)
                    scripts = dispatch.Scripts.on(client)
                for call in dispatch.push_calls(self.keys, batch):
                    scripts.push(*call)
            except Exception as exc:  # whatever failed, the migrator hands these jobs over
                self._failed(len(batch), exc)
        if client is not None:
            client.close()


class AsyncHandover(_Base):
    """For :class:`~pmq_core.client.AsyncClient`: each push is a task of the
    event loop, so that the enqueue returns at its commit."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client: Any = None
        self._scripts: dispatch.Scripts | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def submit(self, rows: Rows) -> None:
        rows = handed(rows)
        if rows:
            task = asyncio.create_task(self._push(rows), name="pmq-handover")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=CLOSE_WAIT)
        if self._client is not None:
            await self._client.aclose()
            self._client = self._scripts = None

    async def _push(self, rows: Rows) -> None:
        try:
            if self._scripts is None:
                self._client = aredis_client(self.settings.redis_url or "", timeout=TIMEOUT,
                                             mode=self.settings.redis_mode)
                self._scripts = dispatch.Scripts.on(self._client)
            for call in dispatch.push_calls(self.keys, rows):
                await self._scripts.push(*call)
        except Exception as exc:  # whatever failed, the migrator hands these jobs over
            self._failed(len(rows), exc)
