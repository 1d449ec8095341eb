"""The scale tests run only when asked for (``pytest -m scale``, the nox
session ``scale``): they start Redis Clusters, Sentinels, PgBouncer and
PostgreSQL replicas of their own, and kill some of them, which takes
minutes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scale.servers import Cluster, PgBouncer, SentinelGroup


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "scale" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="the scale tests run only with -m scale (nox -s scale)")
    for item in items:
        if item.get_closest_marker("scale"):
            item.add_marker(skip)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A Redis Cluster of three primaries, each with a replica, of this test alone."""
    started = Cluster(tmp_path / "cluster")
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    """A primary, its replica and three Sentinels, of this test alone."""
    started = SentinelGroup(tmp_path / "sentinel")
    try:
        started.start()
        yield started
    finally:
        started.stop()


@pytest.fixture
def pgbouncer(pmq_settings) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode of this test alone, in front of the
    test's PostgreSQL."""
    from psycopg.conninfo import conninfo_to_dict

    target = conninfo_to_dict(pmq_settings.database_url)
    started = PgBouncer(str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432),
                        str(target.get("user") or "postgres"))
    try:
        started.start()
        yield started
    finally:
        started.stop()
