"""Message templates: ``<id>.txt`` files in the templates directory.

A template's first line is ``Subject: <subject>``, then a blank line, then
the plain-text body. Both use ``string.Template`` placeholders (``$name`` or
``${name}``), filled from the payload's values plus ``$to``, the recipient.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path

import attrs

from pmq_core import Fail

SUBJECT = "Subject:"


@attrs.frozen
class Rendered:
    subject: str
    body: str


def render(directory: Path, template_id: str, values: Mapping[str, str]) -> Rendered:
    """The template filled in, or Fail naming what is wrong: retrying cannot
    fix a missing template or value."""
    path = directory / f"{template_id}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Fail(f"template {template_id!r} not found: no {template_id}.txt in the templates directory") from None
    head, sep, body = text.replace("\r\n", "\n").partition("\n\n")
    if not sep or not head.startswith(SUBJECT) or "\n" in head:
        raise Fail(f"template {template_id!r} must start with one 'Subject: ...' line and a blank line")
    try:
        subject = string.Template(head[len(SUBJECT):].strip()).substitute(values)
        body = string.Template(body).substitute(values)
    except KeyError as exc:
        raise Fail(f"template {template_id!r} needs a value for {exc.args[0]!r}, which the payload lacks") from None
    except ValueError as exc:
        raise Fail(f"template {template_id!r} has a bad placeholder: {exc}") from None
    if "\n" in subject or "\r" in subject:
        raise Fail(f"template {template_id!r}: a value put a line break into the subject")
    return Rendered(subject, body)
