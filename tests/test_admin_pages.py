"""The operator's reads a dashboard needs: paged and filtered job lists,
running jobs, throughput per minute, cron schedules, and making a waiting
job due now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pmq_core import Admin, JobNotFoundError, JobStatus, JobType, PageCursorError, hookimpl


class Quiet:
    """Two job types; no worker runs them here (rows are set by SQL)."""

    @hookimpl
    def pmq_register_job_types(self) -> list[JobType]:
        return [JobType(name="mail", handler=lambda job: None, cron="*/5 * * * *", description="send mail"),
                JobType(name="hooks", handler=lambda job: None)]


@pytest.fixture
def seeded(pmq_runtime: Any) -> Any:
    """25 jobs over two queues and three states, one minute apart, by SQL."""
    rt = pmq_runtime(Quiet(), worker=False, migrator=False)
    now = datetime.now(UTC)
    with psycopg.connect(rt.settings.database_url, autocommit=True) as conn:
        for i in range(25):
            status = ("completed", "failed", "queued")[i % 3]
            conn.execute("INSERT INTO jobs (queue_name, status, last_error_message, updated_at) "
                         "VALUES (%s, %s, %s, %s)",
                         ("mail" if i % 2 else "hooks", status,
                          f"SMTP said no to #{i}" if status == "failed" else None, now - timedelta(minutes=i)))
    return rt


def walk(admin: Admin, **filters: Any) -> list[list[Any]]:
    """Every page of a listing, following the cursors."""
    pages, after = [], None
    while True:
        page = admin.job_page(after=after, limit=4, **filters)
        pages.append(page.jobs)
        if page.next is None:
            return pages
        after = page.next


def test_pages_cover_every_job_once_newest_first(seeded: Any) -> None:
    with seeded.admin() as admin:
        pages = walk(admin)
    jobs = [job for page in pages for job in page]
    assert len(jobs) == 25 and len({job.id for job in jobs}) == 25
    assert [len(page) for page in pages] == [4] * 6 + [1]
    stamps = [job.updated_at for job in jobs]
    assert stamps == sorted(stamps, reverse=True)


def test_filters_combine(seeded: Any) -> None:
    now = datetime.now(UTC)
    with seeded.admin() as admin:
        failed_mail = [j for p in walk(admin, queue="mail", statuses=["failed"]) for j in p]
        assert failed_mail and all(j.queue_name == "mail" and j.status is JobStatus.FAILED for j in failed_mail)
        assert len(failed_mail) == len([i for i in range(25) if i % 3 == 1 and i % 2])
        (one,) = admin.job_page(error="smtp SAID no to #7").jobs
        assert one.last_error_message == "SMTP said no to #7"
        recent = admin.job_page(since=now - timedelta(minutes=4, seconds=30), limit=50).jobs
        assert len(recent) == 5
        older = admin.job_page(until=now - timedelta(minutes=19, seconds=30), limit=50).jobs
        assert len(older) == 5


def test_hostile_page_requests_get_one_clear_error(seeded: Any) -> None:
    with seeded.admin() as admin:
        with pytest.raises(PageCursorError, match="not a page cursor"):
            admin.job_page(after="'; DROP TABLE jobs; --")
        with pytest.raises(PageCursorError):
            admin.job_page(after="2026-01-01T00:00:00~not-a-uuid")
        with pytest.raises(ValueError, match="1 to 500"):
            admin.job_page(limit=10_000)
        with pytest.raises(ValueError):
            admin.job_page(statuses=["exploded"])
        assert admin.job_page(error="%_\\").jobs == []  # text, not a pattern


def test_run_now_makes_a_scheduled_job_due(pmq_runtime: Any) -> None:
    rt = pmq_runtime(Quiet(), worker=False, migrator=False)
    later = rt.enqueue("hooks", {}, delay=3600)
    with rt.admin() as admin:
        assert admin.run_now(later) is True
        assert rt.job(later).run_at <= datetime.now(UTC)
        assert admin.run_now(later) is False  # due already
        with pytest.raises(JobNotFoundError):
            admin.run_now(uuid.uuid4())


def test_running_throughput_and_cron(seeded: Any) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(seeded.settings.database_url, autocommit=True) as conn:
        job_id = conn.execute("INSERT INTO jobs (queue_name, status, started_at) VALUES ('mail', 'running', now()) "
                              "RETURNING id").fetchone()[0]
        for status, ago in (("success", 0), ("success", 0), ("retry", 0), ("failed", 2), ("success", 90)):
            conn.execute("INSERT INTO job_logs (job_id, status, attempt_number, started_at, finished_at, duration) "
                         "VALUES (%s, %s, 1, %s, %s, '1 second')",
                         (job_id, status, now - timedelta(minutes=ago), now - timedelta(minutes=ago)))
        conn.execute("INSERT INTO pmq_cron_ticks VALUES ('mail', %s)", (now - timedelta(minutes=3),))
    with seeded.admin() as admin:
        assert [row["id"] for row in admin.running()] == [job_id]
        minutes = admin.throughput(60)
        assert len(minutes) == 60
        assert (minutes[-1]["succeeded"], minutes[-1]["retried"], minutes[-1]["failed"]) == (2, 1, 0)
        assert minutes[-3]["failed"] == 1
        assert sum(m["succeeded"] for m in minutes) == 2  # 90 minutes ago is out of the window
        names = {jt["name"]: jt for jt in admin.job_types()}
        assert names["mail"]["description"] == "send mail"
        (cron,) = admin.cron()
        assert cron["name"] == "mail" and cron["cron"] == "*/5 * * * *"
        assert cron["last_tick"] == now - timedelta(minutes=3)
        assert now < cron["next_tick"] <= now + timedelta(minutes=5)
