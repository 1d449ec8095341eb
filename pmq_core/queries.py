"""The SQL pmq runs, loaded by name from ``sql/queries.sql``.

Keeping every query in one file makes the database contract reviewable in
one place; Python code refers to queries only by name. Plugins keep their
SQL the same way with :func:`load_queries`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def load_queries(package: str, path: str = "sql/queries.sql") -> dict[str, str]:
    """The named blocks of a SQL file shipped in ``package``: each block
    starts with a line ``-- name: <name>`` and runs to the next one."""
    text = resources.files(package).joinpath(path).read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def _core() -> dict[str, str]:
    return load_queries("pmq_core")


def q(name: str) -> str:
    """The core query called ``name``."""
    return _core()[name]
