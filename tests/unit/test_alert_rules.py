"""The alert rules (deploy/prometheus/alerts.yml) and the Grafana dashboard
(deploy/grafana/eventshop.json) are valid and name only metrics the services export.

promtool (Debian's `prometheus` package, installed by `make setup`) checks the rules, runs their
unit tests (deploy/prometheus/alerts.test.yml), loads both Prometheus configurations and parses
every dashboard expression. The exported metrics are read from prometheus_client's registry
after importing every module of the platform and the services, which is what a service's
/metrics serves: a rule or panel naming anything else fails here.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import eventshop.platform
import eventshop.services

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
HOST_CONFIG = DEPLOY / "prometheus.yml"
IMAGE = DEPLOY / "images" / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "eventshop.json"

#: series Prometheus writes itself for every scrape target, not a service's
PROMETHEUS_OWN = frozenset({"up"})

#: the sample names prometheus_client's text format gives each metric type
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}


def exported_metrics() -> frozenset[str]:
    """Every sample name a service's /metrics can hold (metrics are defined at import time)."""
    for package in (eventshop.platform, eventshop.services):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    return frozenset(
        family.name + suffix for family in REGISTRY.collect() for suffix in SUFFIXES[family.type]
    )


# -- the metric names of a PromQL expression -------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# a whole identifier (not the tail of a number or duration: 5m, 1e3) not called as a function
_IDENTIFIER = re.compile(r"(?<![\w.:$])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "inf", "nan", "atan2"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: strings, label matchers and lists, ranges,
    Grafana's variables, functions, aggregations and keywords taken out."""
    text = _STRING.sub('""', expr)
    for pattern in (_VARIABLE, _MATCHERS, _RANGE, _LABEL_LIST):
        text = pattern.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def unknown_metrics(exprs: dict[str, str], exported: frozenset[str]) -> dict[str, set[str]]:
    """Where each expression names a metric that is neither exported nor Prometheus' own."""
    found = {where: metric_names(expr) - exported - PROMETHEUS_OWN for where, expr in exprs.items()}
    return {where: names for where, names in found.items() if names}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le) (rate(eventshop_saga_duration_seconds_bucket{queue=~"a.b"}[5m])) > 1',
            {"eventshop_saga_duration_seconds_bucket"},
        ),
        (
            'max by (service, queue) (a_total{x="sum(y) and z"}) / on (service) group_left b'
            " offset 5m > 1e3",
            {"a_total", "b"},
        ),
        (
            'histogram_quantile(0.95, sum without (instance) (rate(c_bucket{s=~"$service"}'
            "[$__rate_interval])))",
            {"c_bucket"},
        ),
        ('up{job="eventshop"} == 0 or vector(0)', {"up"}),
    ],
)
def test_the_metric_name_reader(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_metric_no_service_exports_is_reported() -> None:
    exported = exported_metrics()
    assert {"eventshop_events_parked_total", "eventshop_saga_duration_seconds_bucket"} <= exported
    found = unknown_metrics({"rule": "eventshop_events_parkd_total > 0"}, exported)
    assert found == {"rule": {"eventshop_events_parkd_total"}}


# -- promtool -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `make setup` installs it (scripts/ensure-infra.sh, "
            "Debian's prometheus package), or `apt-get install -y prometheus`"
        )
    return path


def run_promtool(promtool: str, *args: str | Path) -> None:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_are_valid(promtool: str) -> None:
    run_promtool(promtool, "check", "rules", RULES)


def test_every_alert_fires_when_it_should_and_only_then(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", RULE_TESTS)


@pytest.mark.parametrize("config", [HOST_CONFIG, IMAGE / "prometheus.yml"], ids=["host", "image"])
def test_prometheus_loads_the_rules(promtool: str, config: Path) -> None:
    loaded = yaml.safe_load(config.read_text())
    rule_files = [config.parent / name for name in loaded["rule_files"]]
    assert [path.read_text() for path in rule_files] == [RULES.read_text()]
    run_promtool(promtool, "check", "config", config)


def test_the_image_carries_the_rules() -> None:
    # the image's build context is its directory: it holds a copy, kept identical here
    assert (IMAGE / "alerts.yml").read_bytes() == RULES.read_bytes()
    copies = [line for line in (IMAGE / "Dockerfile").read_text().splitlines() if "COPY" in line]
    assert any("alerts.yml" in line.split() for line in copies), copies


# -- the rules --------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_says_how_long_how_bad_and_what_to_run() -> None:
    rules = alert_rules()
    assert rules and all("alert" in rule for rule in rules)
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        # the runbook's first step: an operator's command
        assert "`eventshop " in rule["annotations"]["description"], rule["alert"]


def test_every_rule_names_only_metrics_the_services_export() -> None:
    exprs = {
        f"{rule['alert']} ({rule['labels']['severity']})": rule["expr"] for rule in alert_rules()
    }
    assert unknown_metrics(exprs, exported_metrics()) == {}


# -- the dashboard ----------------------------------------------------------------------------


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels += [panel, *panel.get("panels", [])]
    return panels


def dashboard_exprs() -> dict[str, str]:
    exprs = {
        f"panel {panel['id']} {panel['title']!r} {target['refId']}": target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    }
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            # label_values(<selector>, <label>): the selector is PromQL
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert selector is not None, query
            exprs[f"variable {variable['name']}"] = selector.group(1)
    return exprs


def test_the_dashboard_loads_and_every_panel_asks_the_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39
    [source] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    panels = dashboard_panels()
    assert len({panel["id"] for panel in panels}) == len(panels)
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["targets"], panel["title"]
        for source_ref in [panel["datasource"], *(t["datasource"] for t in panel["targets"])]:
            assert source_ref == {"type": "prometheus", "uid": f"${{{source['name']}}}"}


def test_every_panel_names_only_metrics_the_services_export() -> None:
    assert unknown_metrics(dashboard_exprs(), exported_metrics()) == {}


def test_every_panel_expression_is_promql(promtool: str, tmp_path: Path) -> None:
    def concrete(expr: str) -> str:
        # Grafana's variables as Grafana would fill them in
        return re.sub(r"\$\{?\w+\}?", ".*", re.sub(r"\$__\w+", "1m", expr))

    rules = [
        {"record": f"dashboard:expr_{i}", "expr": concrete(expr)}
        for i, expr in enumerate(dashboard_exprs().values())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", path)
