"""The plugin's settings (section ``metrics``: ``PMQ_METRICS_*``)."""

from __future__ import annotations

import attrs


def _address(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None:
        parse_address(value)


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) as a host and a port, or
    ValueError saying what is wrong."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address: expected HOST:PORT (such as 127.0.0.1:9464), got {value!r}")
    return host.strip("[]"), int(port)


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """Where `pmq run`, `pmq worker` and `pmq migrator` serve ``/metrics``."""

    #: ``HOST:PORT`` to serve ``/metrics`` on; unset, nothing listens and
    #: workers record nothing. Also ``--metrics HOST:PORT``.
    address: str | None = attrs.field(default=None, validator=_address, metadata={
        "option": "--metrics", "help": "Serve Prometheus metrics at http://HOST:PORT/metrics."})
    #: Seconds a scrape reuses the queue depths read from PostgreSQL and
    #: Redis, so that several scrapers (or a dashboard's refresh) cost the
    #: servers one read.
    cache_seconds: float = 5.0
    #: The directory where the processes of one run share their counts (see
    #: :mod:`pmq_prometheus.tally`). `pmq run` makes a fresh one for its
    #: worker processes and removes it at exit; leave it unset.
    snapshot_dir: str | None = None
