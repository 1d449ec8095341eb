"""The Grafana dashboard and the alert rules shipped in the package: each
expression names only metrics the plugin exports, and each figure the
dashboard promises has its panel."""

from __future__ import annotations

import json
import re
from importlib import resources

import yaml
from pmq_prometheus.collector import DeploymentCollector
from pmq_prometheus.tally import metric_families
from prometheus_client.core import Metric

PACKAGE = resources.files("pmq_prometheus")
METRIC = re.compile(r"\bpmq_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def sample_names(families: list[Metric]) -> set[str]:
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def exported(pmq_settings) -> set[str]:
    """Every series name the plugin exports: its counters and histograms,
    and the gauges its collector reads from a real (empty) deployment."""
    families = list(metric_families([]))
    families += list(DeploymentCollector(pmq_settings, cache_seconds=0).collect())
    return sample_names(families)


def dashboard_expressions() -> dict[str, list[str]]:
    dashboard = json.loads(PACKAGE.joinpath("grafana-dashboard.json").read_text())
    return {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in dashboard["panels"]}


def alert_rules() -> list[dict[str, str]]:
    document = yaml.safe_load(PACKAGE.joinpath("alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_dashboard_and_alert_expression_names_exported_metrics(pmq_settings):
    names = exported(pmq_settings)
    assert {"pmq_jobs_finished_total", "pmq_queue_redis_jobs", "pmq_migrator_leader"} <= names
    expressions = [e for exprs in dashboard_expressions().values() for e in exprs]
    expressions += [rule["expr"] for rule in alert_rules()]
    for expression in expressions:
        used = set(METRIC.findall(expression))
        assert used, expression
        assert used <= names, f"{expression!r} names {sorted(used - names)}, which the plugin does not export"
        assert expression.count("(") == expression.count(")"), expression


def test_the_dashboard_shows_each_promised_figure():
    titles = " / ".join(dashboard_expressions()).lower()
    for figure in ("depth by band", "throughput", "error rate", "p95", "oldest", "workers"):
        assert figure in titles, figure


def test_the_alerts_cover_backlog_dead_letters_workers_and_leader():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert {"PmqQueueBackingUp", "PmqDeadLettersRising", "PmqNoLiveWorker", "PmqMigratorWithoutLeader"} <= set(rules)
    assert all(rule["annotations"]["summary"] and rule["labels"]["severity"] for rule in rules.values())
