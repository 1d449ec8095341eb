"""What the commands share: how they print (tables, JSON, times, warnings,
logs), their common ``--json`` and ``--plugins`` options, and the first
steps most of them take (settings, a queue name checked against the
database). Command modules import from here; nothing here imports a
command module, so the package has no import cycle.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click

from pmq_core import redaction
from pmq_core.admin import Admin
from pmq_core.config import Settings
from pmq_core.errors import UnknownQueueError, shown
from pmq_core.keys import BANDS

T = TypeVar("T")


def _warn(message: str) -> None:
    click.echo(f"pmq: warning: {message}", err=True)


def _settings(**overrides: Any) -> Settings:
    return Settings.load(**overrides)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, indent=2))


def _emit_listing(items: Sequence[T], as_json: bool, *, empty: str, headers: Sequence[str],
                  row: Callable[[T], Sequence[Any]], to_json: Callable[[T], Any] = lambda item: item) -> None:
    """A listing command's output: the items as JSON with ``--json``, else
    ``empty`` when there are none, else a table of one ``row`` per item."""
    if as_json:
        _emit_json([to_json(item) for item in items])
    elif not items:
        click.echo(empty)
    else:
        click.echo(_table(headers, [row(item) for item in items]))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [list(headers)] + [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(line.rstrip() for line in lines)


def _when(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value else None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _shorten(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _check_queue(admin: Admin, name: str | None) -> None:
    if name is not None and name not in admin.queue_names():
        raise UnknownQueueError(f"unknown queue {shown(name)} (see `pmq queues list`)")


def _deferred(admin: Admin) -> None:
    """Say what an action left undone in Redis, and what makes up for it."""
    for sentence in admin.deferred:
        _warn(sentence)


#: The column headers of a queue's depth by band.
BAND_HEADERS = [band.upper() for band in BANDS]


def _bands(bands: dict[str, int]) -> list[int]:
    """A queue's depth by band, in the order of :data:`BAND_HEADERS`."""
    return [bands.get(band, 0) for band in BANDS]


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
plugins_option = click.option("--plugins", metavar="A,B",
                              help="Entry-point names of the plugins to load (overrides PMQ_PLUGINS).")


def _start_logging(level: int = logging.INFO,
                   fmt: str = "%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s") -> None:
    """Log to stderr, through the filter that hides passwords."""
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
    redaction.guard_logging()
