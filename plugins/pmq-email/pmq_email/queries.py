"""The SQL pmq-email runs, loaded by name from ``sql/queries.sql``, and its
schema migrations from ``sql/migrations/``."""

from __future__ import annotations

from functools import cache

from pmq_core import Migration, load_queries, migrations_in

COMPONENT = "pmq-email"


@cache
def _all() -> dict[str, str]:
    return load_queries("pmq_email")


def q(name: str) -> str:
    """The query called ``name``."""
    return _all()[name]


def migrations() -> list[Migration]:
    """This plugin's schema steps, in version order."""
    return migrations_in("pmq_email", COMPONENT)
