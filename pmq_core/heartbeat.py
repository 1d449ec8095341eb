"""A worker's proof of life: the heartbeat thread, and what it reports.

The heartbeat runs on its own thread with its own connection, so that a
handler blocking the worker's event loop cannot make the worker look dead
(the leading migrator rescues the jobs of workers silent for
``rescue_after`` seconds). Each beat also says what the worker's slots are
doing and whether it reaches Redis, for ``pmq stats`` and ``pmq health``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from pmq_core import store
from pmq_core.config import Settings
from pmq_core.db import PG_DOWN, pg_connect
from pmq_core.errors import DatabaseUnavailableError
from pmq_core.limits import error_text
from pmq_core.reconnect import Backoff

log = logging.getLogger(__name__)

#: Seconds a pop may wait beyond :data:`POP_TIMEOUT` before the worker
#: reports that Redis does not answer.
HUNG_AFTER = 5.0
#: Longest Redis error text a heartbeat reports.
MAX_LINK_ERROR = 200


class RedisLink:
    """Whether the worker reaches Redis: set on the event loop by each pop
    (and by the cancel subscription), read by the heartbeat thread, which
    writes it to ``pmq_workers`` for `pmq health`.

    A pop that fails marks the link down until one gets through. A pop
    that has waited :data:`HUNG_AFTER` seconds beyond its own timeout counts
    as failing too: a Redis that accepts connections but never answers
    raises nothing. Each field is replaced whole, so the other thread never
    reads half an update.
    """

    def __init__(self, pop_timeout: float) -> None:
        self.pop_timeout = pop_timeout
        self._error: tuple[datetime, str] | None = None
        self._pop_since: datetime | None = None

    def reached(self) -> None:
        self._error = None

    def failed(self, exc: BaseException) -> None:
        since = self._error[0] if self._error else datetime.now(UTC)
        self._error = (since, error_text(exc)[:MAX_LINK_ERROR])

    def pop_started(self) -> None:
        self._pop_since = datetime.now(UTC)

    def pop_ended(self) -> None:
        self._pop_since = None

    def report(self) -> dict[str, Any]:
        """Since when and how the worker has failed to reach Redis (both
        None while it reaches it)."""
        error, pop_since = self._error, self._pop_since
        if error is None and pop_since is not None:
            hung_since = pop_since + timedelta(seconds=self.pop_timeout + HUNG_AFTER)
            if datetime.now(UTC) > hung_since:
                error = (hung_since, f"no answer from Redis to a {self.pop_timeout:g}s pop for over {HUNG_AFTER:g}s")
        since, message = error if error else (None, None)
        return {"redis_error_since": since, "redis_error": message}


class Heartbeat(threading.Thread):
    """Proves the worker alive from its own thread and connection, so that a
    handler blocking the event loop cannot starve it, and reports whether
    the worker reaches Redis."""

    def __init__(self, settings: Settings, worker_id: uuid.UUID, queues: list[str], concurrency: int,
                 redis_link: RedisLink, slots: Callable[[], tuple[int, int]]) -> None:
        super().__init__(name="pmq-heartbeat", daemon=True)
        self.settings = settings
        self.worker_id = worker_id
        self.queues = queues
        self.concurrency = concurrency
        self.redis_link = redis_link
        self.slots = slots  # (busy, claimed ahead), read from this thread: two ints, a snapshot is enough
        self._halt = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        assert self.settings.database_url
        if self._conn is None or self._conn.closed:
            self._conn = pg_connect(self.settings.database_url, timeout=5, pooled=self.settings.database_pooled)
        return self._conn

    def register(self) -> None:
        backoff = Backoff()
        while True:
            try:
                store.register_worker(self._connection(), self.worker_id, self.queues, self.concurrency)
                return
            except (*PG_DOWN, DatabaseUnavailableError) as exc:
                self._conn = None
                delay = backoff.next()
                log.warning("cannot register worker (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)

    def run(self) -> None:
        while not self._halt.wait(self.settings.heartbeat_interval):
            try:
                busy, ahead = self.slots()
                if not store.heartbeat(self._connection(), self.worker_id, busy, ahead, **self.redis_link.report()):
                    self.register()
            except (*PG_DOWN, DatabaseUnavailableError) as exc:
                self._conn = None
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._halt.set()

    def unregister(self) -> None:
        try:
            store.unregister_worker(self._connection(), self.worker_id)
        except (*PG_DOWN, DatabaseUnavailableError):
            pass
        finally:
            if self._conn is not None:
                self._conn.close()
