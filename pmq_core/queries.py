"""The SQL pmq runs, loaded by name from ``sql/queries.sql``.

Keeping every query in one file makes the database contract reviewable in
one place; Python code refers to queries only by name.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def all_queries() -> dict[str, str]:
    text = resources.files("pmq_core").joinpath("sql/queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = body.strip().rstrip(";")
    return found


def q(name: str) -> str:
    """The query called ``name``."""
    return all_queries()[name]
