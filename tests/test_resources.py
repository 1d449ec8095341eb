"""Handlers reach what their plugin shares through ``job.resources`` and
``job.settings``, in a worker and in its isolation child alike, and the
resources are closed when the worker (or child) stops."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pmq_core import JobStatus, JobType, hookimpl
from pmq_core.isolation import Isolation
from pmq_core.models import JobContext
from pmq_core.plugins import Plugins


class Marker:
    """A resource whose ``close()`` leaves a file named after its process,
    so that a test sees it closed, whichever process opened it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.pid = os.getpid()

    def close(self) -> None:
        Path(self.directory, f"closed-{self.pid}").write_text("closed")


class Sharing:
    """Job type ``sharing``, whose handler returns what it finds in
    ``job.resources`` and ``job.settings`` (a module-level class: the
    isolation child receives it pickled)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.seen: list[Any] = []

    @hookimpl
    def pmq_worker_resources(self, settings: Any, worker_id: uuid.UUID) -> dict[str, Any]:
        return {"sharing.marker": Marker(self.directory), "sharing.worker": worker_id}

    def handle(self, job: JobContext) -> dict[str, Any]:
        marker = job.resources["sharing.marker"]
        seen = {"pid": os.getpid(), "marker_pid": marker.pid, "names": sorted(job.resources),
                "key_prefix": job.settings.key_prefix if job.settings else None}
        self.seen.append(seen)
        return seen

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="sharing", handler=self.handle, timeout=30)]


def test_pmq_worker_resources_reach_handlers_and_close_when_the_worker_stops(pmq_runtime, tmp_path):
    plugin = Sharing(str(tmp_path))
    rt = pmq_runtime(plugin)
    assert rt.wait(rt.enqueue("sharing", {})).status is JobStatus.COMPLETED
    assert plugin.seen == [{"pid": os.getpid(), "marker_pid": os.getpid(),
                            "names": ["sharing.marker", "sharing.worker"], "key_prefix": rt.settings.key_prefix}]
    assert not (tmp_path / f"closed-{os.getpid()}").exists()
    rt.stop()
    assert (tmp_path / f"closed-{os.getpid()}").read_text() == "closed"


def test_a_suspect_finds_resources_its_isolation_child_opened(pmq_settings, tmp_path):
    plugins = Plugins(None, [Sharing(str(tmp_path))], entry_points=False).load()
    now = datetime.now(UTC)
    ctx = JobContext(id=uuid.uuid4(), queue="sharing", payload=None, attempt=1, max_attempts=1, priority=100,
                     created_at=now, started_at=now, raw_payload={})

    async def run() -> Any:
        isolation = Isolation(plugins, pmq_settings, uuid.uuid4(), ["sharing"])
        try:
            assert await isolation.can_run("sharing")
            return await isolation.run(ctx)
        finally:
            await isolation.close()

    seen = asyncio.run(run())
    assert seen["pid"] == seen["marker_pid"] != os.getpid()
    assert seen["names"] == ["sharing.marker", "sharing.worker"]
    assert seen["key_prefix"] == pmq_settings.key_prefix
    assert (tmp_path / f"closed-{seen['pid']}").read_text() == "closed"  # closed as the child stopped


def test_a_handler_missing_a_resource_fails_naming_it(pmq_runtime):
    def wants(job: JobContext) -> None:
        job.resources["nobody.pool"]

    class Wanting:
        @hookimpl
        def pmq_register_job_types(self) -> list[JobType]:
            return [JobType(name="wanting", handler=wants)]

    rt = pmq_runtime(Wanting())
    job = rt.wait(rt.enqueue("wanting", {}, max_attempts=1))
    assert job.status is JobStatus.FAILED
    assert "no job resource 'nobody.pool'" in (job.last_error_message or "")
