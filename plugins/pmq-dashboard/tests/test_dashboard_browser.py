"""The dashboard as an operator uses it, in headless Chromium against a
real deployment (PostgreSQL, Redis, a migrator and a worker): depths that
change without a reload, a dead job opened, read and replayed until it
completes, a queue paused from its page, dead letters purged after a
confirmation, and hostile payloads shown as text."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pmq_core import JobStatus, JobType, RetryPolicy, hookimpl

expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect


class Shop:
    """``photos`` always works; ``invoices`` fails for good until healed."""

    def __init__(self) -> None:
        self.healed = False

    def charge(self, job: Any) -> str:
        if not self.healed:
            raise ValueError(f"invoice {job.payload['invoice']} has no customer")
        return "charged"

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="photos", handler=lambda job: "resized", description="resize a photo"),
                JobType(name="invoices", handler=self.charge, retry=RetryPolicy(max_attempts=1))]


def test_depth_changes_live_and_a_dead_job_is_replayed_to_completion(pmq_runtime: Any, serve: Any,
                                                                      page: Any) -> None:
    shop = Shop()
    rt = pmq_runtime(shop, worker=False)
    dashboard = serve(rt)
    page.goto(dashboard.url)
    expect(page.locator("#verdict")).to_have_text(re.compile("healthy|warning|critical"))
    page.evaluate("window.sameDocument = true")
    normal = page.locator('tr[data-queue="photos"] td.band-normal')
    expect(normal).to_have_text("0")
    expect(page.locator('tr[data-queue="photos"] td.held')).to_have_text("0")  # flow control's count

    for n in range(7):
        rt.enqueue("photos", {"photo": n})
    expect(normal).to_have_text("7")  # handed to Redis by the migrator, seen without a reload
    assert page.evaluate("window.sameDocument") is True
    expect(page.locator("#throughput[data-loaded='60']")).to_be_attached()  # the chart drew its hour

    rt.start_worker()
    expect(normal).to_have_text("0")
    dead_id = rt.enqueue("invoices", {"invoice": 4711})
    rt.wait(dead_id)
    expect(page.locator('tr[data-queue="invoices"] td.dead')).to_have_text("1")

    page.get_by_role("link", name="Dead letters").click()
    page.locator(f'a[href="/jobs/{dead_id}"]').click()
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator("#last-error")).to_contain_text("invoice 4711 has no customer")
    expect(page.locator("#attempts")).to_contain_text("attempt 1: failed")

    shop.healed = True
    page.get_by_role("button", name="Replay").click()
    expect(page.locator(".notice")).to_contain_text("1 dead job(s) sent back")
    expect(page.locator("#job-status")).to_have_text("completed")  # the state fragment, refreshed
    expect(page.locator("#attempts")).to_contain_text("attempt 1: success")
    assert rt.job(dead_id).status is JobStatus.COMPLETED


def test_pausing_a_queue_from_its_page_stops_workers_taking_its_jobs(pmq_runtime: Any, serve: Any,
                                                                    page: Any) -> None:
    rt = pmq_runtime(Shop())
    dashboard = serve(rt)
    page.goto(f"{dashboard.url}/queues/photos")
    expect(page.locator(".policy")).to_contain_text("resize a photo")
    page.get_by_role("button", name="Pause queue").click()
    expect(page.locator(".notice")).to_contain_text("Queue paused")

    held = [rt.enqueue("photos", {"photo": n}) for n in range(3)]
    control = rt.enqueue("invoices", {"invoice": 1})
    rt.wait(control)  # the worker and migrator went on working meanwhile
    expect(page.locator("#queue-counts .waiting")).to_have_text("3")
    assert {rt.job(job_id).status for job_id in held} == {JobStatus.QUEUED}

    page.get_by_role("button", name="Resume queue").click()
    expect(page.locator(".notice")).to_contain_text("Queue resumed")
    assert {job.status for job in rt.wait_all(held)} == {JobStatus.COMPLETED}
    page.locator("select[name=status]").select_option("completed")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.jobs tbody tr")).to_have_count(3)


def test_dead_letters_are_purged_only_after_confirming(pmq_runtime: Any, serve: Any, page: Any) -> None:
    rt = pmq_runtime(Shop())
    dead = [rt.enqueue("invoices", {"invoice": n}) for n in range(3)]
    rt.wait_all(dead)
    page.goto(f"{serve(rt).url}/dead?queue=invoices")
    page.locator(f'input[name=ids][value="{dead[0]}"]').check()
    page.locator(f'input[name=ids][value="{dead[1]}"]').check()
    page.get_by_role("button", name="Purge selected…").click()
    expect(page.locator("h1")).to_have_text("Purge 2 dead job(s) for good?")
    assert all(rt.job(job_id).status is JobStatus.FAILED for job_id in dead)  # nothing yet

    page.locator("#confirm-purge").click()
    expect(page.locator(".notice")).to_contain_text("2 dead job(s) deleted")
    expect(page.locator("input[name=ids]")).to_have_count(1)
    with rt.admin() as admin:
        assert [job.id for job in admin.job_page(statuses=["failed"]).jobs] == [dead[2]]

    page.locator("input[data-select-all]").check()  # the page's own script ticks every box
    expect(page.locator("input[name=ids]:checked")).to_have_count(1)


def test_hostile_payloads_and_errors_render_as_text(pmq_runtime: Any, serve: Any, page: Any) -> None:
    rt = pmq_runtime(Shop())
    hostile = "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>"
    job_id = rt.enqueue("invoices", {"invoice": hostile})
    rt.wait(job_id)
    page.goto(f"{serve(rt).url}/jobs/{job_id}")
    expect(page.locator("#payload")).to_contain_text(hostile)
    expect(page.locator("#last-error")).to_contain_text(hostile)
    assert page.evaluate("window.pwned") is None
    assert page.locator("#payload img, #last-error img, main script").count() == 0
