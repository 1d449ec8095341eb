"""The connection to PostgreSQL that pmq-email's handlers share.

Each worker process makes one from its settings (pmq-email's
``pmq_worker_resources``) and closes it when it stops; the pool opens on
first use, so a process that never runs a handler never connects.
Follow-up jobs are enqueued through pmq's public client, on the handler's
own connection, so that they commit or roll back with its records.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from pmq_core import Client, Settings


class Database:
    """A lazily opened connection pool and an enqueue client for one database."""

    def __init__(self, settings: Settings, application_name: str) -> None:
        if not settings.database_url:
            raise ValueError("settings have no database_url: give the worker's settings")
        self.settings = settings
        self.url: str = settings.database_url
        self._application_name = application_name
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._client: Client | None = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode; use ``conn.transaction()``
        to group statements."""
        with self._open().connection() as conn:
            yield conn

    @property
    def client(self) -> Client:
        """A pmq client that loads no plugin: payloads are given as instances
        of their attrs classes, which checks them without the job types."""
        with self._lock:
            if self._client is None:
                self._client = Client(attrs.evolve(self.settings, plugins=()))
            return self._client

    def _open(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                pool = ConnectionPool(self.url, min_size=1, max_size=4, open=False,
                                      kwargs={"autocommit": True, "row_factory": dict_row,
                                              "application_name": self._application_name})
                pool.open(wait=True, timeout=10)
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            if self._client is not None:
                self._client.close()
                self._client = None
