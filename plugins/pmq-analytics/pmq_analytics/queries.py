"""The SQL pmq-analytics runs, loaded by name from ``sql/queries.sql``, and its
schema migrations from ``sql/migrations/``."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from pmq_core import Migration

COMPONENT = "pmq-analytics"

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_(\w+)\.sql$")


@cache
def _all() -> dict[str, str]:
    text = resources.files("pmq_analytics").joinpath("sql/queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def q(name: str) -> str:
    """The query called ``name``."""
    return _all()[name]


def migrations() -> list[Migration]:
    """This plugin's schema steps, in version order."""
    folder = resources.files("pmq_analytics").joinpath("sql/migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(component=COMPONENT, version=int(match[1]), name=match[2],
                                   sql=entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)
