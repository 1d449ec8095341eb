"""The dashboard's pages and actions, as a Starlette application.

Every page is rendered on the server from :class:`pmq_core.Admin` (one per
request, run in a worker thread: Admin is synchronous); the live parts are
fragments that htmx fetches again every few seconds, and the chart's data
is JSON that ``static/dashboard.js`` fetches. GET never changes anything;
every action is a POST form (with its CSRF token, see :mod:`.security`)
answered by a redirect back to the page, which says what was done.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from pmq_core import (
    Admin,
    DatabaseUnavailableError,
    JobNotFoundError,
    JobStatus,
    PmqError,
    RedisUnavailableError,
    UnknownQueueError,
)
from pmq_dashboard import formatting, security

HERE = Path(__file__).parent
#: Jobs on one page of a list.
PAGE = 50
#: Minutes the throughput chart covers.
CHART_MINUTES = 60
#: Bands in the order workers pop them.
BANDS = ("high", "normal", "low")
#: What the page says after an action (``?done=<key>&n=<count>``); an
#: unknown key says nothing, so a crafted link cannot put words on the page.
NOTICES = {
    "paused": "Queue paused: workers take none of its jobs until it is resumed.",
    "resumed": "Queue resumed.",
    "cancelled": "Job cancelled.",
    "not-cancelled": "The job had already finished; nothing was cancelled.",
    "run-now": "The job is due now; the migrator hands it to a worker at its next round.",
    "not-waiting": "The job was not waiting for a later time; nothing changed.",
    "replayed": "{n} dead job(s) sent back to their queue.",
    "purged": "{n} dead job(s) deleted for good.",
    "nothing-selected": "Select at least one job first.",
    "logged-out": "Logged out.",
}
REDIS_DEFERRED = ("Redis could not be reached for part of that action; PostgreSQL has it, and the migrator makes up "
                  "for the rest (see `pmq` warnings for details).")
STATUS_ERRORS: list[tuple[type[Exception], int]] = [
    (JobNotFoundError, 404), (UnknownQueueError, 404), (DatabaseUnavailableError, 503),
    (RedisUnavailableError, 503), (ValueError, 400), (PmqError, 500)]


class Dashboard:
    """The pages of one deployment. ``admin`` makes an :class:`Admin` for
    one request; ``read_only`` hides and refuses every action; ``refresh``
    is the seconds between two refreshes of a live fragment."""

    def __init__(self, admin: Callable[[], Admin], *, token: str | None = None, read_only: bool = False,
                 refresh: float = 2.0) -> None:
        self.admin = admin
        self.token = token
        self.read_only = read_only
        self.refresh = refresh
        self.templates = Jinja2Templates(directory=HERE / "templates")
        formatting.install(self.templates.env)

    # -- plumbing --------------------------------------------------------------

    async def read(self, work: Callable[[Admin], Any]) -> Any:
        """``work(admin)`` in a worker thread, with an Admin of its own."""
        return (await self.change(work))[0]

    async def change(self, work: Callable[[Admin], Any]) -> tuple[Any, bool]:
        """As :meth:`read`, and whether a Redis part of the work was left
        undone (Redis unreachable: ``Admin.deferred``)."""
        def run() -> tuple[Any, bool]:
            with self.admin() as admin:
                return work(admin), bool(admin.deferred)
        return await run_in_threadpool(run)

    def page(self, request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        count = request.query_params.get("n", "")
        context.update(request=request, csrf=request.state.csrf, read_only=self.read_only,
                       refresh=self.refresh, login=self.token is not None, bands=BANDS,
                       notice=notice.format(n=count if count.isdigit() else "some"),
                       warning=REDIS_DEFERRED if request.query_params.get("redis") == "deferred" else "")
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)

    def act(self, request: Request) -> None:
        if self.read_only:
            raise HTTPException(403, "the dashboard is read-only: actions are disabled")

    def error_page(self, request: Request, exc: Exception) -> Response:
        status = next((code for kind, code in STATUS_ERRORS if isinstance(exc, kind)), 500)
        if isinstance(exc, HTTPException):
            status = exc.status_code
        message = exc.detail if isinstance(exc, HTTPException) else _one_line(exc)
        return self.page(request, "error.html", status_code=status, message=message, status=status)

    # -- pages -----------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        report = await self.read(lambda admin: admin.health())
        fragment = "hx-request" in request.headers
        return self.page(request, "_overview.html" if fragment else "overview.html", report=report,
                         held=any("held" in q for q in report["queues"]))

    async def throughput(self, request: Request) -> Response:
        rows = await self.read(lambda admin: admin.throughput(CHART_MINUTES))
        minutes = [int(r["minute"].timestamp()) for r in rows]
        done, retried, failed = ([r[k] for r in rows] for k in ("succeeded", "retried", "failed"))
        rate = [(f + r) / (f + r + d) if f + r + d else None for d, r, f in zip(done, retried, failed, strict=True)]
        return JSONResponse({"minutes": minutes, "completed": done, "retried": retried, "failed": failed,
                             "error_rate": rate})

    async def queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        params = request.query_params
        job_id = params.get("id", "").strip()
        if job_id:
            try:
                return RedirectResponse(f"/jobs/{uuid.UUID(job_id)}", status_code=303)
            except ValueError:
                raise ValueError(f"{job_id[:60]!r} is not a job id (a UUID)") from None
        filters = _job_filters(params)

        def read(admin: Admin) -> dict[str, Any]:
            row = _queue_row(admin, name)
            policy = next((jt for jt in admin.job_types() if jt["name"] == name), None)
            return {"row": row, "policy": policy, "jobs": admin.job_page(queue=name, limit=PAGE, **filters)}

        data = await self.read(read)
        if "hx-request" in request.headers:
            return self.page(request, "_queue_counts.html", name=name, **data)
        return self.page(request, "queue.html", name=name, params=params, statuses=list(JobStatus),
                         next_url=_next_url(request, data["jobs"].next), **data)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job, logs = await self.read(lambda admin: admin.job(job_id))
        now = datetime.now(UTC)
        template = "_job_state.html" if "hx-request" in request.headers else "job.html"
        return self.page(request, template, job=job, logs=logs, now=now,
                         waits=job.status in (JobStatus.QUEUED, JobStatus.RETRY_SCHEDULED) and job.run_at > now)

    async def dead(self, request: Request) -> Response:
        queue = request.query_params.get("queue") or None
        after = request.query_params.get("after") or None

        def read(admin: Admin) -> dict[str, Any]:
            return {"names": sorted(admin.queue_names()),
                    "jobs": admin.job_page(queue=queue, statuses=[JobStatus.FAILED], after=after, limit=PAGE)}

        data = await self.read(read)
        return self.page(request, "dead.html", queue=queue, next_url=_next_url(request, data["jobs"].next), **data)

    async def workers(self, request: Request) -> Response:
        def read(admin: Admin) -> dict[str, Any]:
            report = admin.health()
            running: dict[str, list[dict[str, Any]]] = {}
            for row in admin.running():
                running.setdefault(str(row["worker_id"]), []).append(row)
            return {"report": report, "running": running}

        data = await self.read(read)
        template = "_workers.html" if "hx-request" in request.headers else "workers.html"
        return self.page(request, template, **data)

    async def cron(self, request: Request) -> Response:
        schedules = await self.read(lambda admin: admin.cron())
        return self.page(request, "cron.html", schedules=schedules)

    # -- actions -----------------------------------------------------------------

    async def pause(self, request: Request) -> Response:
        return await self._queue_action(request, active=False)

    async def resume(self, request: Request) -> Response:
        return await self._queue_action(request, active=True)

    async def _queue_action(self, request: Request, active: bool) -> Response:
        self.act(request)
        name = request.path_params["name"]
        _, deferred = await self.change(lambda admin: admin.set_active(name, active))
        return _back(f"/queues/{quote(name, safe='')}", "resumed" if active else "paused", deferred)

    async def cancel(self, request: Request) -> Response:
        self.act(request)
        job_id = request.path_params["job_id"]
        previous, deferred = await self.change(lambda admin: admin.cancel(job_id))
        return _back(f"/jobs/{job_id}", "cancelled" if previous is not None else "not-cancelled", deferred)

    async def run_now(self, request: Request) -> Response:
        self.act(request)
        job_id = request.path_params["job_id"]
        moved = await self.read(lambda admin: admin.run_now(job_id))
        return _back(f"/jobs/{job_id}", "run-now" if moved else "not-waiting")

    async def replay_one(self, request: Request) -> Response:
        self.act(request)
        job_id = request.path_params["job_id"]
        replayed, deferred = await self.change(lambda admin: admin.replay([job_id]))
        return _back(f"/jobs/{job_id}", "replayed", deferred, n=len(replayed))

    async def dead_action(self, request: Request) -> Response:
        """Replay or purge the selected dead jobs. Purging first shows what
        it would delete and asks again (``confirmed``)."""
        self.act(request)
        action = request.path_params["action"]
        if action not in ("replay", "purge"):
            raise HTTPException(404, f"no action {action[:40]!r} on dead letters (replay or purge)")
        form = await request.form()
        ids = [str(v) for v in form.getlist("ids")]
        queue = str(form.get("queue") or "")
        back = "/dead" + (f"?{urlencode({'queue': queue})}" if queue else "")
        if not ids:
            return _back(back, "nothing-selected")
        if action == "purge" and form.get("confirmed") != "yes":
            return self.page(request, "confirm_purge.html", ids=ids, queue=queue)
        work = (lambda admin: admin.replay(ids)) if action == "replay" else (lambda admin: admin.purge(ids))
        done, deferred = await self.change(work)
        return _back(back, "replayed" if action == "replay" else "purged", deferred, n=len(done))

    # -- logging in ----------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html", failed=False)

    async def login(self, request: Request) -> Response:
        form = await request.form()
        given = str(form.get("token") or "")
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        if not security.token_matches(given, self.token):
            return self.page(request, "login.html", status_code=401, failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(security.SESSION_COOKIE, security.session_value(self.token), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login?done=logged-out", status_code=303)
        response.delete_cookie(security.SESSION_COOKIE, path="/")
        return response

    # -- the application -------------------------------------------------------------

    def application(self) -> Starlette:
        routes = [
            Route("/", self.overview),
            Route("/api/throughput", self.throughput),
            Route("/queues/{name:path}/pause", self.pause, methods=["POST"]),
            Route("/queues/{name:path}/resume", self.resume, methods=["POST"]),
            Route("/queues/{name:path}", self.queue),
            Route("/jobs/{job_id}", self.job),
            Route("/jobs/{job_id}/cancel", self.cancel, methods=["POST"]),
            Route("/jobs/{job_id}/run-now", self.run_now, methods=["POST"]),
            Route("/jobs/{job_id}/replay", self.replay_one, methods=["POST"]),
            Route("/dead", self.dead),
            Route("/dead/{action:str}", self.dead_action, methods=["POST"]),
            Route("/workers", self.workers),
            Route("/cron", self.cron),
            Route("/login", self.login_form),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        # What a request can provoke is shown as a page; anything else is a
        # bug, answered with a bare 500 by Starlette (and logged).
        handlers: dict[Any, Callable[..., Any]] = {kind: self.error_page
                                                   for kind in (HTTPException, PmqError, ValueError)}
        return Starlette(routes=routes, exception_handlers=handlers,
                         middleware=[Middleware(security.Guard, token=self.token)])


def _back(path: str, done: str, deferred: bool = False, n: int | None = None) -> RedirectResponse:
    """Back to ``path``, saying what was done (see :data:`NOTICES`)."""
    query = {"done": done, **({"n": str(n)} if n is not None else {}), **({"redis": "deferred"} if deferred else {})}
    return RedirectResponse(f"{path}{'&' if '?' in path else '?'}{urlencode(query)}", status_code=303)


def _queue_row(admin: Admin, name: str) -> dict[str, Any]:
    for row in admin.queues():
        if row["name"] == name:
            return row
    raise UnknownQueueError(f"no queue named {name[:60]!r}")


def _job_filters(params: Any) -> dict[str, Any]:
    """The queue page's filters from its query string; a bad one is a
    ValueError naming it (the page says so)."""
    status = params.get("status") or None
    if status is not None and status not in {s.value for s in JobStatus}:
        raise ValueError(f"{status[:60]!r} is not a job status")
    return {"statuses": [status] if status else [], "error": params.get("error") or None,
            "since": _utc(params.get("since"), "since"), "until": _utc(params.get("until"), "until"),
            "after": params.get("after") or None}


def _utc(text: str | None, name: str) -> datetime | None:
    """A time from a ``datetime-local`` field, read as UTC (the pages show UTC)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: {text[:40]!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _next_url(request: Request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    query = {k: v for k, v in request.query_params.items() if k not in ("after", "done", "n", "redis")}
    return f"{request.url.path}?{urlencode({**query, 'after': cursor})}"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def create_app(admin: Callable[[], Admin], **options: Any) -> Starlette:
    """The dashboard for the deployment ``admin()`` operates; options as :class:`Dashboard`."""
    return Dashboard(admin, **options).application()
