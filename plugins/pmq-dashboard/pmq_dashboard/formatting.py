"""How the pages write numbers, times and payloads: Jinja filters. Every
value reaches the page through Jinja's escaping; nothing here marks text
safe."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment


def age(seconds: float | None) -> str:
    """A duration as an operator reads it: 850ms, 42s, 7m 5s, 3h 2m, 4d 1h."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def since(when: datetime | None) -> str:
    """How long ago ``when`` was (or how far ahead, for a future time)."""
    if when is None:
        return "–"
    delta = (datetime.now(UTC) - when).total_seconds()
    return f"{age(delta)} ago" if delta >= 0 else f"in {age(-delta)}"


def stamp(when: datetime | None) -> str:
    """A time in UTC to the second, as logs write it."""
    if when is None:
        return "–"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pretty_json(value: Any) -> str:
    """A payload indented for reading; a stored value Python could not
    decode is shown as pmq describes it."""
    if not isinstance(value, (dict, list)):
        return str(value)
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def number(value: int | float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def install(env: Environment) -> None:
    env.filters.update(age=age, since=since, stamp=stamp, pretty_json=pretty_json, number=number, percent=percent)
