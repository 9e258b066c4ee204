"""docs/grafana-dashboard.json: importable, every expression PromQL, every metric one of ours.

The integration test tests/integration/test_metrics_flow.py checks each name against what
/metrics really exports after a scripted flow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
# What Grafana puts in place of its variables before the query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "1h",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Gauges that measure neither time nor a count of things with a unit of their own.
GAUGES = {
    "meetinghooks_worker_pool_busy",
    "meetinghooks_worker_pool_capacity",
    "meetinghooks_scrape_collector_success",
}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions(dashboard: dict[str, Any] | None = None) -> list[str]:
    """Every PromQL expression of the dashboard, as Grafana sends it."""
    found = []
    for panel in panels(dashboard or load()):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append(expr)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric name of every selector in `expr` (parsed, not pattern-matched)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_metric_names() -> set[str]:
    """Every metric name the dashboard's expressions name."""
    return {name for expr in expressions() for name in metric_names(expr)}


def test_every_expression_is_promql() -> None:
    exprs = expressions()
    assert len(exprs) >= 20
    for expr in exprs:
        assert "$" not in expr, f"a Grafana variable left in {expr}"
        promql_parser.parse(expr)  # raises on anything that is not PromQL


def test_a_broken_expression_would_be_caught() -> None:
    with pytest.raises(ValueError, match=r".+"):
        promql_parser.parse("sum(rate(meetinghooks_http_requests_total[1m])")


def test_the_datasource_is_a_variable_for_import() -> None:
    dashboard = load()
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource"
    assert variable["query"] == "prometheus"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_names_only_our_metrics_by_prometheus_conventions() -> None:
    names = dashboard_metric_names()
    assert all(name.startswith("meetinghooks_") for name in names), names
    for name in names:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert (
            name.endswith(("_total", "_seconds")) or base.endswith("_seconds") or (name in GAUGES)
        ), f"{name}: a counter ends in _total, a duration in _seconds"


def test_shows_every_subject_of_the_issue() -> None:
    names = dashboard_metric_names()
    assert {
        "meetinghooks_http_requests_total",
        "meetinghooks_http_request_duration_seconds_bucket",
        "meetinghooks_ingest_events_total",
        "meetinghooks_events_processed_total",
        "meetinghooks_delivery_attempts_total",
        "meetinghooks_delivery_latency_seconds_bucket",
        "meetinghooks_delivery_queue_lag_seconds",
        "meetinghooks_inbox_lag_seconds",
        "meetinghooks_alerts_fired_total",
        "meetinghooks_worker_pool_busy",
        "meetinghooks_worker_pool_capacity",
        "meetinghooks_worker_pool_busy_seconds_total",
    } <= names
