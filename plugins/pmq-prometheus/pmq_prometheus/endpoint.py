"""The ``/metrics`` endpoint of a serving process.

`pmq run --processes N` runs its workers in N processes beside the one that
serves the endpoint. Each writes its totals to a directory the run shares,
which the endpoint sums when scraped (see :mod:`pmq_prometheus.tally` for
why not prometheus_client's multiprocess mode). The serving process makes
the directory and names it in ``PMQ_METRICS_SNAPSHOT_DIR`` before the worker
processes start, so that they inherit it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from pmq_core import Settings
from pmq_prometheus.collector import DeploymentCollector
from pmq_prometheus.settings import MetricsSettings, parse_address
from pmq_prometheus.tally import SnapshotCollector

SNAPSHOT_DIR = "PMQ_METRICS_SNAPSHOT_DIR"


def shared_directory(config: MetricsSettings) -> Path:
    """The run's snapshot directory: the configured one, else a fresh one
    removed at exit, named in the environment the worker processes inherit."""
    if config.snapshot_dir:
        return Path(config.snapshot_dir)
    directory = tempfile.mkdtemp(prefix="pmq-metrics-")
    os.environ[SNAPSHOT_DIR] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Path(directory)


def serve(config: MetricsSettings, settings: Settings, directory: Path) -> Any:
    """Serve ``/metrics`` at ``config.address``: the counts of every process
    of the run, and the deployment's gauges. Returns the HTTP server (an
    OSError, such as a port in use, reaches the caller)."""
    assert config.address is not None
    host, port = parse_address(config.address)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(directory))
    registry.register(DeploymentCollector(settings, config.cache_seconds))
    server, _thread = start_http_server(port, host, registry=registry)
    return server
