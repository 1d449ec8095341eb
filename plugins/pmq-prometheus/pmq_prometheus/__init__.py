"""Prometheus metrics for pmq, as a plugin: see :mod:`pmq_prometheus.plugin`."""

from pmq_prometheus.settings import MetricsSettings

__all__ = ["MetricsSettings"]
