"""Keeping passwords out of everything pmq prints or logs.

A server URL's password can reach the screen in many ways: in the URL
itself, quoted back in a library's error message, in a connection pool's
warning, in a traceback, in ``--json`` output. Two tools cover them:

- :func:`redact_url` shows a URL with its password replaced by ``***``. It
  works on plain text, never on a parsed URL, so it cannot fail and cannot
  miss, however malformed the URL (unbalanced brackets, an unencoded ``@``,
  ``/``, ``#``, space or non-ASCII character in the password, ``password=``
  in the query string or a libpq ``key=value`` string).
- :func:`scrub` replaces every form a password of the configured URLs can
  take in text (as written, percent-decoded, as ``repr`` or JSON would quote
  it) with ``***``. The ``pmq`` command registers those passwords with
  :func:`remember` before it does anything (a plugin's secret settings are
  added by :func:`remember_secrets` when they are read), then runs inside
  :func:`scrubbed_output`: whatever reaches stdout or stderr (its own output,
  ``--json``, a library's warning, a traceback, a log line) and every record
  a root logging handler emits (to a file, say) is scrubbed on the way.

A password that is also an ordinary word (say ``postgres``) is masked
wherever the word appears: unreadable output is the price of never showing
it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TextIO
from urllib.parse import quote, unquote, unquote_plus

MASK = "***"

#: ``password=value`` in a query string or a libpq ``key=value`` string; the
#: value is quoted (libpq's quoting, with backslash escapes) or runs to the
#: next ``&``, space or end.
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^&\s]*)", re.IGNORECASE | re.DOTALL)

#: Every query value of a ``redis+sentinel://`` URL but the user name: its
#: query holds the Sentinels' password, under whatever name a typo gave it.
_SENTINEL_QUERY_VALUE = re.compile(r"([?&](?!sentinel_username=)[^=&]*=)([^&]*)")

_known: set[str] = set()


def _userinfo_password(url: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host`` lies in ``url``.

    The user information ends at the *last* ``@``: a password holding an
    unencoded ``@``, ``/``, ``?``, ``#`` or space is then hidden whole, at the
    cost of hiding more than the password when a later ``@`` is not part of
    it. The password starts after the first ``:`` of the user information."""
    start = url.find("://")
    at = url.rfind("@")
    if start < 0 or at < start:
        return None
    colon = url.find(":", start + 3, at)
    return None if colon < 0 else (colon + 1, at)


def redact_url(url: str | None) -> str:
    """``url`` with its password replaced by ``***``, safe to print or log."""
    if not url:
        return "(unset)"
    secrets = passwords_in(url)
    span = _userinfo_password(url)
    if span is not None:
        url = url[:span[0]] + MASK + url[span[1]:]
    url = _PASSWORD_PARAM.sub(lambda m: m.group(1) + MASK, url)
    if _is_sentinel(url):
        url = _SENTINEL_QUERY_VALUE.sub(lambda m: m.group(1) + MASK, url)
    return scrub(url, secrets)


def passwords_in(url: str | None) -> set[str]:
    """Every form the passwords in ``url`` can take in text."""
    if not url:
        return set()
    written: list[str] = []
    span = _userinfo_password(url)
    if span is not None:
        written.append(url[span[0]:span[1]])
    for match in _PASSWORD_PARAM.finditer(url):
        value = match.group(2)
        written.append(value)
        if value.startswith("'"):
            written.append(re.sub(r"\\(.)", r"\1", value[1:].removesuffix("'"), flags=re.DOTALL))
    if _is_sentinel(url):
        written.extend(match.group(2) for match in _SENTINEL_QUERY_VALUE.finditer(url[span[1] if span else 0:]))
    return _forms({s for raw in written for s in (raw, unquote(raw), unquote_plus(raw))})


def _is_sentinel(url: str) -> bool:
    return url.lower().startswith("redis+sentinel://")


def _forms(secrets: Iterable[str]) -> set[str]:
    """Every form each of ``secrets`` can take in text: as written, as
    ``repr`` or JSON would quote it, percent-encoded, backslash-escaped."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe=""),
                  secret.replace("\\", "\\\\").replace("'", "\\'")}
    forms.discard("")
    forms.discard(MASK)
    return forms


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret (by default every remembered one) replaced
    by ``***``, longest first so that a secret holding another goes whole."""
    for secret in sorted(_known if secrets is None else secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def remember(urls: Iterable[str | None]) -> None:
    """Add the passwords of ``urls`` to those :func:`scrub` hides by default."""
    for url in urls:
        _known.update(passwords_in(url))


def remember_secrets(values: Iterable[str]) -> None:
    """Add ``values`` (a plugin's secret settings), and the passwords of any
    that is a URL, to those :func:`scrub` hides by default."""
    for value in values:
        _known.update(_forms({value, value.strip()}) | passwords_in(value))


class ScrubbingFilter(logging.Filter):
    """A handler filter that scrubs remembered passwords from each record:
    its message, its arguments and any traceback it carries."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _known:
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: logging would print them whole
            message = "(a log message whose arguments did not fit it; hidden)"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def guard_logging() -> None:
    """Scrub every record that reaches a handler of the root logger, or
    logging's last resort (which prints warnings when no handler is set)."""
    for handler in [*logging.getLogger().handlers, logging.lastResort]:
        if handler is not None and not any(isinstance(f, ScrubbingFilter) for f in handler.filters):
            handler.addFilter(ScrubbingFilter())


class _ScrubbingStream:
    """A text stream that scrubs what is written before passing it on.

    ``buffer`` is hidden so that nothing (click looks for it) can write
    around the scrubbing to the bytes underneath."""

    buffer = None

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(scrub(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def scrubbed_output() -> Iterator[None]:
    """Scrub remembered passwords from everything written to ``sys.stdout``
    and ``sys.stderr`` inside the block, and from every record reaching the
    root logger's handlers from now on."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (stream if stream is None else _ScrubbingStream(stream)  # type: ignore[misc]
                              for stream in saved)
    guard_logging()
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
