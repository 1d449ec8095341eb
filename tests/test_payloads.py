"""Payload checks on real servers: the sync and async clients take the same
depth, and a refused payload writes nothing; a stored row of the wrong type
fails in the worker naming the field. The checks themselves are unit tests
(tests/unit/test_payload_checks.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest

from pmq_core import AsyncClient, JobStatus, JobType, PayloadError, hookimpl
from pmq_core.payloads import MAX_DEPTH
from tests.reliability_support import scalar


def nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep: ``{"a": {"a": ... {}}}``."""
    payload: dict[str, Any] = {}
    for _ in range(levels - 1):
        payload = {"a": payload}
    return payload


# -- the clients agree on the limit -------------------------------------------------


class Free:
    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="free", handler=lambda job: None)]


def test_sync_and_async_clients_take_the_same_depth_and_refuse_one_more(pmq_runtime):
    rt = pmq_runtime(Free(), worker=False, migrator=False)
    count = "SELECT count(*) FROM jobs"
    assert rt.job(rt.enqueue("free", nested(MAX_DEPTH))).payload == nested(MAX_DEPTH)
    with pytest.raises(PayloadError, match="nested more than 32 levels deep"):
        rt.enqueue("free", nested(MAX_DEPTH + 1))

    async def produce() -> None:
        async with AsyncClient(rt.settings, plugins=rt.plugins) as client:
            await client.enqueue("free", nested(MAX_DEPTH))
            with pytest.raises(PayloadError, match="nested more than 32 levels deep"):
                await client.enqueue("free", nested(MAX_DEPTH + 1))
            loop: dict[str, Any] = {}
            loop["me"] = loop
            with pytest.raises(PayloadError, match="payload.me contains itself"):
                await client.enqueue("free", loop)

    asyncio.run(produce())
    assert scalar(rt.settings.database_url, count) == 2


# -- payload classes are strict ---------------------------------------------------------


@attrs.frozen
class Size:
    width: int
    height: int = 1


@attrs.frozen(kw_only=True)
class Shape:
    width: int = 1
    ratio: float = 1.0
    filled: bool = False
    tags: list[str] = attrs.Factory(list)


def test_every_wrong_field_is_named_at_once_and_nothing_is_written(pmq_runtime):
    class Typed:
        @hookimpl
        def pmq_register_job_types(self) -> list[JobType]:
            return [JobType(name="shapes", handler=lambda job: None, payload=Shape)]

    rt = pmq_runtime(Typed(), worker=False, migrator=False)
    with pytest.raises(PayloadError) as info:
        rt.enqueue("shapes", {"width": "12", "filled": 1, "tags": "ab"})
    assert all(f"@ payload.{name}" in str(info.value) for name in ("width", "filled", "tags"))
    stored = rt.job(rt.enqueue("shapes", {"width": 12, "ratio": 2}))
    assert stored.payload == {"width": 12, "ratio": 2}
    assert scalar(rt.settings.database_url, "SELECT count(*) FROM jobs") == 1


def test_a_stored_row_of_the_wrong_type_fails_in_the_worker_naming_the_field(pmq_runtime):
    ran: list[Any] = []

    class Typed:
        @hookimpl
        def pmq_register_job_types(self) -> list[JobType]:
            return [JobType(name="sizes", handler=lambda job: ran.append(job.payload), payload=Size)]

    rt = pmq_runtime(Typed())
    good = rt.enqueue("sizes", {"width": 2})
    bad = scalar(rt.settings.database_url,
                 "INSERT INTO jobs (queue_name, payload) VALUES ('sizes', '{\"width\": \"12\"}') RETURNING id")
    assert rt.wait(good).status is JobStatus.COMPLETED
    job = rt.wait(bad)
    assert job.status is JobStatus.FAILED and job.attempt_count == 1
    assert "expected an integer, got a string '12' @ payload.width" in job.last_error_message
    assert ran == [Size(2)]
