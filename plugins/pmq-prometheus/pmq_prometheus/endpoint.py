"""The ``/metrics`` endpoint of a serving process, and multiprocess mode.

`pmq run --processes N` runs its workers in N processes beside the one that
serves the endpoint. Their counters reach it through prometheus_client's
multiprocess mode rather than an aggregating endpoint of our own: each
process writes its metrics to memory-mapped files in one directory, which
the library's ``MultiProcessCollector`` sums at scrape time. It is the
library's own, documented mechanism (Gunicorn's workers use it); totals
survive a worker process that exits; and a worker pays no more than a write
to a mapped page per observation, no socket and no extra thread. The
directory is set before any metric exists, in the serving process, and the
worker processes inherit it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

from pmq_core import Settings
from pmq_prometheus.settings import MetricsSettings, parse_address

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_mode() -> None:
    """Make this process and those it starts write their metrics to a
    fresh directory (removed at exit), unless the operator named one.
    Must run before prometheus_client is first imported in this process."""
    if os.environ.get(MULTIPROC_DIR):
        return
    directory = tempfile.mkdtemp(prefix="pmq-metrics-")
    os.environ[MULTIPROC_DIR] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def serve(config: MetricsSettings, settings: Settings) -> Any:
    """Serve ``/metrics`` at ``config.address``: the counters of every
    process of the deployment's run, and the deployment's gauges. Returns
    the HTTP server (an OSError, such as a port in use, reaches the caller)."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from pmq_prometheus.collector import DeploymentCollector

    assert config.address is not None
    host, port = parse_address(config.address)
    registry = CollectorRegistry(auto_describe=True)
    MultiProcessCollector(registry)
    registry.register(DeploymentCollector(settings, config.cache_seconds))
    server, _thread = start_http_server(port, host, registry=registry)
    return server
