"""What stands between the network and an operator's page that can delete
data: where it may listen, who may open it, which requests may change
anything, and the headers that keep a browser from running or framing
anything but the dashboard's own files.

- Binding: loopback needs nothing; any other address needs a token
  (:func:`bind_problem`), or the dashboard does not start.
- Authentication, when a token is set: ``Authorization: Bearer <token>``,
  or the session cookie the login form sets (a keyed hash of the token:
  changing the token ends every session).
- CSRF: every POST carries the value of the ``pmq_csrf`` cookie in a form
  field or header (double submit), and a browser's ``Origin``, when sent,
  must be the dashboard's own. Cookies are ``SameSite=Strict``.
- Headers: a CSP that admits scripts and styles only from the dashboard's
  own origin (no inline script anywhere), no framing, no MIME sniffing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

SESSION_COOKIE = "pmq_dashboard_session"
CSRF_COOKIE = "pmq_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: Fewest characters a token may have: a short one is guessed.
MIN_TOKEN = 16
#: Paths open without a session: the login form and the files it uses.
OPEN_PATHS = ("/login", "/static/")

HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}

Next = Callable[[Request], Awaitable[Response]]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_problem(host: str, token: str | None) -> str | None:
    """Why the dashboard may not listen on ``host`` with ``token``, or None."""
    if token is not None and len(token) < MIN_TOKEN:
        return f"the dashboard token must have at least {MIN_TOKEN} characters (it has {len(token)})"
    if token is None and not is_loopback(host):
        return (f"refusing to listen on {host} without authentication: anyone who reaches it could replay, "
                "purge and cancel jobs; set a token (PMQ_DASHBOARD_TOKEN, or token in [tool.pmq.dashboard]) "
                "or listen on 127.0.0.1")
    return None


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: proves the login without
    holding the token itself."""
    return hmac.new(token.encode(), b"pmq-dashboard session", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


class Guard(BaseHTTPMiddleware):
    """Security headers on every response; authentication (when a token is
    set) and CSRF checks before any handler runs."""

    def __init__(self, app: object, token: str | None) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.token = token

    async def dispatch(self, request: Request, call_next: Next) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        if len(csrf) != 43:  # token_urlsafe(32); anything else was not ours
            csrf = secrets.token_urlsafe(32)
            fresh = True
        else:
            fresh = False
        request.state.csrf = csrf
        response = await self._checked(request, call_next)
        if fresh:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        response.headers.update(HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    async def _checked(self, request: Request, call_next: Next) -> Response:
        if request.method not in ("GET", "HEAD", "POST"):
            return PlainTextResponse("method not allowed", status_code=405)
        if "\x00" in request.url.path or any("\x00" in v for v in request.query_params.values()):
            return PlainTextResponse("refused: the request holds a NUL character, which no name, id or text "
                                     "in pmq can contain", status_code=400)
        if request.method == "POST":
            problem = await self._csrf_problem(request)
            if problem:
                return PlainTextResponse(f"refused: {problem}", status_code=403)
        if self.token is not None and not self._authenticated(request) \
                and not request.url.path.startswith(OPEN_PATHS):
            if request.method == "GET" and "hx-request" not in request.headers:
                return RedirectResponse("/login", status_code=303)
            return PlainTextResponse("authentication required", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="pmq dashboard"'})
        return await call_next(request)

    def _authenticated(self, request: Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(given.strip(), self.token):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    async def _csrf_problem(self, request: Request) -> str | None:
        origin = request.headers.get("origin")
        if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host"):
            return "the request comes from another site"
        expected = request.cookies.get(CSRF_COOKIE, "")
        given = request.headers.get(CSRF_HEADER)
        if given is None:
            await request.body()  # kept, so that the handler can read the form again
            form = await request.form()
            value = form.get(CSRF_FIELD)
            given = value if isinstance(value, str) else ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return "missing or wrong CSRF token (reload the page and try again)"
        return None
