"""What handlers share in one worker process: a connection pool, an API
client. Plugins provide them from ``pmq_worker_resources``; handlers read
them as ``job.resources[name]``; the worker closes them when it stops.

The worker owns their lifetime, so a plugin keeps no module globals set from
a hook, and a handler run outside a worker (a test, a script) is given its
resources explicitly (``run_inline(..., resources=...)``). The isolation
child, which runs suspects, opens its own the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pmq_core.errors import PluginError
from pmq_core.models import Resources

if TYPE_CHECKING:
    from pmq_core.config import Settings
    from pmq_core.plugins import Plugins

log = logging.getLogger(__name__)


def open_resources(plugins: Plugins, settings: Settings, worker_id: uuid.UUID) -> Resources:
    """Every plugin's resources for one worker process.

    A plugin whose hook raises or returns something other than a mapping of
    names is logged and left out (its handlers then fail on the missing
    name, naming it); two plugins providing one name is a PluginError, as
    for job types, since a handler would get the other plugin's object."""
    values: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for call in plugins.hooks.worker_resources(settings=settings, worker_id=worker_id):
        try:
            provided = call() or {}
            if not isinstance(provided, Mapping) or not all(isinstance(name, str) for name in provided):
                raise TypeError(f"expected a dict of names to objects, got {type(provided).__name__}")
        except Exception:
            log.exception("plugin %r: its pmq_worker_resources hook failed; its resources are missing",
                          call.plugin)
            continue
        for name, value in provided.items():
            if name in owners:
                raise PluginError(f"job resource {name!r} is provided by two plugins, {owners[name]!r} and "
                                  f"{call.plugin!r}: prefix resource names with the plugin's name")
            owners[name] = call.plugin
            values[name] = value
    return Resources(values)


async def close_resources(resources: Mapping[str, Any]) -> None:
    """Close each resource that has ``aclose()`` (awaited) or ``close()``
    (in a thread: a pool's close may wait for its connections); a failure
    is logged and the others are still closed."""
    loop = asyncio.get_running_loop()
    for name, value in resources.items():
        try:
            if callable(getattr(value, "aclose", None)):
                result = value.aclose()
                if inspect.isawaitable(result):
                    await result
            elif callable(getattr(value, "close", None)):
                await loop.run_in_executor(None, value.close)
        except Exception:
            log.exception("closing job resource %r failed", name)
