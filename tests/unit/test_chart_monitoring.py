"""The chart's Grafana dashboard and alert rules query only metrics fairpool exports.

The exported names come from the real registries (the scheduler daemon's in
scheduler/k8s/exporter.py, with its scrape-time gauges, and the meter's), as Prometheus
sees them on /metrics: a counter `x` is scraped as `x_total`, a histogram as `x_bucket`,
`x_sum` and `x_count`. `promtool check rules` on them is an integration test
(tests/integration/test_chart.py): promtool is a real component `make unit` does not install."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from scheduler.engine.decisions import Decisions
from scheduler.k8s.exporter import SchedulerMetrics, State

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "fairpool"
DASHBOARD = CHART / "files" / "dashboard.json"
RULES = CHART / "files" / "rules.yaml"
# Metric names in PromQL: identifiers that are not followed by "(" (functions) and are
# not label names inside {...} or by/without/on/ignoring (...) lists.
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _scraped_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        suffixes = _SUFFIXES.get(family.type)
        names |= {family.name + s for s in suffixes} if suffixes else {family.name}
    return names


def scheduler_names() -> set[str]:
    scheduler = SchedulerMetrics(
        lambda: State(snapshot=None, decisions=Decisions(), leader=False, running_phase=frozenset())
    )
    return _scraped_names(scheduler.registry)


def meter_names() -> set[str]:
    # The meter's registry (`fairpool meter --watch --metrics-port`).
    from reports.metering.exporter import MeterMetrics

    return _scraped_names(MeterMetrics().registry)


def exported_names() -> set[str]:
    return scheduler_names() | meter_names()


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (fairpool's and any other)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        keywords = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}
        if rest.startswith("(") or word in keywords:
            continue
        if word.startswith("$") or text[match.start() - 1 : match.start()] == "$":
            continue
        names.add(word)
    return names


def _dashboard_queries() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query: Any = variable.get("query")
        if isinstance(query, dict):
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query["query"])
            assert inner, query
            yield f"variable {variable['name']}", inner.group(1)


def _rule_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(fairpool_x_bucket{member=~"$m"}[5m])))'
        " and on() (time() - fairpool_y) > 3 or vector(0)"
    )
    assert metric_names(expr) == {"fairpool_x_bucket", "fairpool_y"}
    assert metric_names("a > on (namespace) group_left max by (namespace) (b)") == {"a", "b"}


def test_the_exported_names_are_the_scraped_ones() -> None:
    names = scheduler_names()
    assert "fairpool_binds_total" in names and "fairpool_binds" not in names
    assert "fairpool_scheduling_cycle_duration_seconds_bucket" in names
    assert "fairpool_member_entitlement_gpus" in names and "fairpool_leader" in names
    meter = meter_names()
    assert "fairpool_meter_runs_total" in meter and "fairpool_meter_pending_hours" in meter


def test_every_dashboard_and_rule_query_reads_only_exported_metrics() -> None:
    exported = exported_names()
    queries = [*_dashboard_queries(), *_rule_queries()]
    assert len(queries) > 20
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} not exported by fairpool ({expr})"


def test_every_dashboard_query_reads_the_namespace_of_the_variable_only() -> None:
    """Two releases (two pools, two namespaces) export the same metrics: a selector
    without the namespace showed both pools on each release's dashboard."""
    scoped = re.compile(r'(fairpool_[a-zA-Z0-9_:]+)(\{namespace="\$namespace"[,}])?')
    for where, expr in _dashboard_queries():
        if where == "variable namespace":
            continue  # it lists the namespaces to choose from
        for match in scoped.finditer(expr):
            assert match.group(2), f"{where}: {match.group(1)} in {expr!r}"


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    read = set().union(*(metric_names(e) for _, e in _dashboard_queries()))
    for name in (
        "fairpool_member_allocated_gpus",
        "fairpool_member_entitlement_gpus",
        "fairpool_member_fair_share_gpus",
        "fairpool_member_borrowed_gpus",
        "fairpool_member_lent_gpus",
        "fairpool_member_pending_gpus",
        "fairpool_member_owed_blocker",
        "fairpool_time_to_entitlement_seconds_bucket",
        "fairpool_owed_allowance_seconds",
        "fairpool_idle_gpus_while_pending",
        "fairpool_pod_scheduling_duration_seconds_bucket",
        "fairpool_reclaim_lost_gpu_seconds_total",
        "fairpool_scheduling_cycle_duration_seconds_bucket",
        "fairpool_binds_total",
        "fairpool_meter_coverage_ratio",
        "fairpool_meter_pending_hours",
    ):
        assert name in read, name


def test_alerts_cover_leader_metering_and_entitlement() -> None:
    alerts = dict(_rule_queries())
    assert "fairpool_leader" in metric_names(alerts["FairpoolNoLeader"])
    assert "fairpool_meter_pending_hours" in metric_names(alerts["FairpoolMeteringPendingHoursOld"])
    assert metric_names(alerts["FairpoolOwnerBelowEntitlement"]) == {
        "fairpool_member_owed_seconds",
        "fairpool_owed_allowance_seconds",
    }


def test_each_cause_a_gauge_writes_is_in_its_help_text_and_docs_metrics_md() -> None:
    """An operator reads the causes of `fairpool_member_owed_blocker` and
    `fairpool_idle_gpus_while_pending` on /metrics (HELP) and in docs/metrics.md: both
    list every cause the daemon writes (HELP left `disruption_budget` out)."""
    from scheduler.engine import schedule
    from tests.unit.engine_strategies import job, node, policy, running, snapshot

    pol = policy(["lab-a", "lab-b"])
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    run = [running("x", "lab-b", "a1", gpus=8), running("y", "lab-b", "b1", gpus=8)]
    snap = snapshot(nodes, [job("j", "lab-a", gpus=8)], run)
    decisions = schedule(snap, pol)
    metrics = SchedulerMetrics(
        lambda: State(snap, decisions, True, frozenset({"x", "y"}), pol, version=1)
    )
    docs = (CHART.parents[2] / "docs" / "metrics.md").read_text()
    checked = 0
    for family in metrics.registry.collect():
        causes = {s.labels["cause"] for s in family.samples if "cause" in s.labels}
        if not causes or family.type != "gauge":
            continue
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{family.name}` |"))
        listed = re.search(r"`cause` \(([^)]*)\)", row)
        assert listed, row
        assert causes == set(re.findall(r"`(\w+)`", listed.group(1))), family.name
        assert all(cause in family.documentation for cause in causes), family.documentation
        checked += 1
    assert checked == 2


def test_a_panel_named_time_to_entitlement_shows_the_glossarys_time_to_entitlement() -> None:
    """docs/glossary.md's time to entitlement is the owed episodes'
    (`fairpool_time_to_entitlement_seconds`); a pod's time from creation to bind is
    another figure (a panel of that titled "Time to entitlement" sat beside the real one)."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        read = set().union(*(metric_names(t["expr"]) for t in panel.get("targets", [])))
        named = panel["title"].lower().startswith("time to entitlement")
        assert named == ("fairpool_time_to_entitlement_seconds_bucket" in read), panel["title"]


def test_every_series_a_rule_reads_is_selected_by_namespace() -> None:
    # The chart replaces the matcher by the release's namespace: a selector without it
    # would read every release's pool, and each alert fire once per release.
    for name, expr in _rule_queries():
        for metric in metric_names(expr):
            selectors = re.findall(rf"\b{metric}(\{{[^}}]*\}})?", expr)
            assert selectors, (name, metric)
            for selector in selectors:
                assert selector.startswith('{namespace=~".+"'), (name, metric, expr)
