"""What ops runs on: the Grafana dashboard, Alertmanager routing, the runbook, the rules' tests.

Checked by the tools that read the files in production where they are installed (promtool
from ``prometheus``, amtool from ``prometheus-alertmanager``: ``make test-deps``) and
skipped with the reason where not. Docker is not needed: compose is checked as a file.
The dashboard's queries may name only series the service exports (``Metrics().registry``)
with the labels it gives them, plus the labels Prometheus adds to every target.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from homemonitor.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "homemonitor.json"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
RUNBOOK = DEPLOY / "runbook.md"

#: What Grafana puts in place of its variables, for a 6-hour range and every replica.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "6h",
    "$instance": ".*",
}
#: Labels Prometheus gives every scraped series (the target's), beside the exported ones.
TARGET_LABELS = frozenset({"job", "instance"})
#: The receiver each severity in alerts.yml is routed to.
RECEIVERS = {"critical": "oncall-pager", "warning": "ops-tickets"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


# -- what the service exports -------------------------------------------------------------


@cache
def exported_series() -> dict[str, frozenset[str]]:
    """Every series name homemonitor's /metrics can carry, with the labels it has."""
    metrics = Metrics()
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():  # the process, platform and GC collectors
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, MetricWrapperBase):
            continue
        # prometheus_client keeps name, type and label names private; a labelled metric
        # with no children yet has no samples to read them from.
        name, kind, labels = wrapper._name, wrapper._type, set(wrapper._labelnames)
        for suffix in suffixes[kind]:
            series.setdefault(f"{name}{suffix}", set()).update(labels)
        if kind == "histogram":
            series[f"{name}_bucket"].add("le")
    return {name: frozenset(labels) for name, labels in series.items()}


def _selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The series an expression selects (name, labels it matches on) and its grouping labels.

    A small lexer, enough for the dashboard's queries: strings, range and subquery brackets
    and ``by (...)``-style clauses are taken out; what is left that names neither a function
    (followed by ``(``) nor a keyword is a metric name, with its ``{...}`` matchers.
    """
    text = _STRING.sub('""', expr)
    grouping = {
        label.strip() for m in _GROUPING.finditer(text) for label in m.group(1).split(",")
    } - {""}
    text = _RANGE.sub(" ", _GROUPING.sub(" ", text))
    inside = [range(m.start(), m.end()) for m in re.finditer(r"\{[^}]*\}", text)]
    found: list[tuple[str, set[str]]] = []
    for m in _IDENT.finditer(text):
        rest = text[m.end() :].lstrip()
        in_matchers = any(m.start() in span for span in inside)
        if rest.startswith("(") or m.group() in _KEYWORDS or in_matchers:
            continue
        labels: set[str] = set()
        if rest.startswith("{"):
            labels = set(_MATCHER.findall(rest[1 : rest.index("}")]))
        found.append((m.group(), labels))
    return found, grouping


def _unknown_names(expr: str, legend: str = "") -> list[str]:
    """Metric names and labels in ``expr`` (and its legend) that the service does not export."""
    exported = exported_series()
    selectors, grouping = _selectors(expr)
    problems = [name for name, _ in selectors if name not in exported]
    known = {name: exported[name] | TARGET_LABELS for name, _ in selectors if name in exported}
    for name, labels in selectors:
        problems += [f"{name}{{{label}}}" for label in labels - known.get(name, labels)]
    anywhere = set().union(TARGET_LABELS, *known.values())
    problems += [f"by ({label})" for label in grouping - anywhere]
    problems += [
        f"legend {{{{{label}}}}}" for label in set(_LEGEND_LABEL.findall(legend)) - anywhere
    ]
    return problems


def test_the_query_checker_finds_names_and_labels() -> None:
    """The lexer the dashboard checks rely on finds every series and label, and no function."""
    expr = (
        "histogram_quantile(0.99, sum by (instance, le) (rate(homemonitor_commit_duration_"
        'seconds_bucket{job="homemonitor", instance=~"a|b"}[5m] offset 1d))) > 2 * '
        "(sum(up) or vector(0))"
    )
    assert (
        [("homemonitor_commit_duration_seconds_bucket", {"job", "instance"}), ("up", set())],
        {"instance", "le"},
    ) == _selectors(expr)
    assert ["up", "homemonitor_readings_stored_total{reason}", "by (patient)"] == _unknown_names(
        'sum by (patient) (up + homemonitor_readings_stored_total{reason="x"})'
    )


# -- the dashboard -----------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels() -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    top = _dashboard()["panels"]
    return [*top, *(p for row in top for p in row.get("panels", []))]


def _queries() -> Iterator[tuple[str, str, str]]:
    """(a name for the query, its PromQL with Grafana's variables filled in, its legend)."""
    for panel in _panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            name = f"panel_{panel['id']}_{target['refId']}"
            yield name, expr, target.get("legendFormat", "")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make test-deps, or apt-get install prometheus)")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool accepts each panel's query, written as a recording rule."""
    rules = [{"record": f"dashboard:{name}", "expr": expr} for name, expr, _ in _queries()]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = _promtool("check", "rules", str(path))
    assert 0 == done.returncode, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_dashboard_queries_name_only_exported_metrics_and_labels() -> None:
    """Every series, matcher, grouping and legend label in a panel is one the service exports."""
    queries = list(_queries())
    variables = _dashboard()["templating"]["list"]
    for variable in variables:  # label_values(<selector>, <label>)
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["definition"])
        assert match is not None, variable["definition"]
        queries.append((f"variable {variable['name']}", match[1], f"{{{{{match[2]}}}}}"))
    problems = {
        name: bad for name, expr, legend in queries if (bad := _unknown_names(expr, legend))
    }
    assert 40 < len(queries)
    assert {} == problems


def test_open_alerts_are_taken_with_max_as_the_recording_rule_does() -> None:
    """Panels on homemonitor_alerts_open use the recording rule's max(), never a sum."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    recorded = {r["record"]: r["expr"] for g in rules for r in g["rules"] if "record" in r}
    on_open = [e for _, e, _ in _queries() if re.search(r"\bhomemonitor_alerts_open\b", e)]
    assert 2 <= len(on_open)
    assert {recorded["severity:homemonitor_alerts_open:max"]} == set(on_open)


def test_dashboard_is_grafana_11_json_on_the_provisioned_prometheus() -> None:
    """schemaVersion of Grafana 10/11, one data source, the rows ops asked for, no internet."""
    dashboard = _dashboard()
    source = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = source["datasources"]
    panels = _panels()
    used = {
        json.dumps(x["datasource"], sort_keys=True)
        for p in panels
        for x in [p, *p.get("targets", [])]
        if "datasource" in x
    }
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert ("homemonitor", False) == (dashboard["uid"], dashboard["editable"])
    assert {json.dumps({"type": "prometheus", "uid": datasource["uid"]}, sort_keys=True)} == used
    assert ("prometheus", "http://prometheus:9090") == (datasource["type"], datasource["url"])
    assert [
        "Overview",
        "Ingest",
        "Lag",
        "Rejections (quarantine)",
        "Database",
        "Broker",
        "Clinical alerts",
        "Outbox and notifications (not yet instrumented)",
        "Clinician API",
        "Process",
    ] == rows
    assert [] == re.findall(r"https?://[^\s\"]+", DASHBOARD.read_text())
    assert len({p["id"] for p in panels}) == len(panels)


def test_dashboard_panels_do_not_overlap() -> None:
    """Every panel sits inside the 24-column grid and no two share a cell."""
    cells: dict[tuple[int, int], str] = {}
    clashes = []
    for panel in _dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for cell in itertools.product(
            range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
        ):
            if cell in cells:
                clashes.append((cells[cell], panel["title"]))
            cells[cell] = panel["title"]
    assert [] == clashes


# -- the rules: a runbook section and a unit test for each ------------------------------------


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _slug(heading: str) -> str:
    """The anchor GitHub and GitLab give a Markdown heading."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def _runbook_sections() -> dict[str, str]:
    """Each ``##`` section of the runbook by its anchor."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {_slug(title): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_alert_links_its_own_runbook_section() -> None:
    """Each alert's runbook_url is one base + deploy/runbook.md#<its name>, an existing section."""
    urls = {name: rule["annotations"]["runbook_url"] for name, rule in _alerts().items()}
    parsed = {
        n: re.fullmatch(r"(https://\S+/)deploy/runbook\.md#([\w-]+)", u) for n, u in urls.items()
    }
    assert dict.fromkeys(urls, True) == {n: m is not None for n, m in parsed.items()}
    matches = {n: m for n, m in parsed.items() if m is not None}
    sections = _runbook_sections()
    assert 1 == len({m.group(1) for m in matches.values()})  # one base to replace
    assert {n.lower() for n in urls} == {m.group(2) for m in matches.values()}
    assert set() == {m.group(2) for m in matches.values()} - set(sections)
    runbook_alerts = {s for s in sections if s.startswith("homemonitor")}
    assert runbook_alerts == {n.lower() for n in urls}  # no section for an alert that is gone


def test_every_runbook_section_says_what_to_confirm_do_and_escalate() -> None:
    """Each alert's section has its four parts: means, confirm, do, escalate."""
    sections = _runbook_sections()
    parts = ("**Means.**", "**Confirm.**", "**Do.**", "**Escalate**")
    missing = {
        name: [p for p in parts if p not in sections[name.lower()]]
        for name in _alerts()
        if name.lower() in sections
    }
    assert {name: [] for name in _alerts()} == missing


def test_runbook_sql_reads_no_patient_data() -> None:
    """The runbook's SQL never selects payloads, details, patient or device ids, or values."""
    text = RUNBOOK.read_text()
    blocks = re.findall(r"^[\s-]*```sql\n(.*?)^\s*```", text, re.MULTILINE | re.DOTALL)
    forbidden = re.compile(
        r"\b(payload|detail|patient_id|device_id|systolic|diastolic|mean_arterial|heart_rate|"
        r"body_weight|spo2)\b|SELECT \*|\w\.\*"
    )
    assert 6 <= len(blocks)
    assert [] == [hit.group() for block in blocks for hit in forbidden.finditer(block)]


def _rule_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())[
        "tests"
    ]
    return tests


def test_every_rule_has_a_promtool_unit_test() -> None:
    """Each alert is tested firing at least once; each recording rule by a promql_expr_test."""
    cases = [case for t in _rule_tests() for case in t.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    tested = {case["alertname"] for case in cases}
    exprs = {case["expr"] for t in _rule_tests() for case in t.get("promql_expr_test", [])}
    records = {rule["record"] for rule in _rules() if "record" in rule}
    assert set(_alerts()) == tested
    assert set(_alerts()) == firing
    assert set() == records - exprs


# -- Alertmanager ------------------------------------------------------------------------


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip(
            "amtool is not installed (make test-deps, or apt-get install prometheus-alertmanager)"
        )
    return subprocess.run([amtool, *args], capture_output=True, text=True, check=False, timeout=60)


def test_amtool_accepts_the_alertmanager_config() -> None:
    """amtool check-config passes on deploy/alertmanager/alertmanager.yml."""
    done = _amtool("check-config", str(ALERTMANAGER_CONFIG))
    assert 0 == done.returncode, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_routes_by_its_severity() -> None:
    """Critical alerts page, warnings go to tickets: amtool's route test for every alert."""
    expected = {name: RECEIVERS[rule["labels"]["severity"]] for name, rule in _alerts().items()}
    routed = {}
    for name, rule in _alerts().items():
        labels = [f"{k}={v}" for k, v in {"alertname": name, **rule["labels"]}.items()]
        done = _amtool("config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
        routed[name] = done.stdout.strip()
    assert expected == routed


def test_alertmanager_names_only_alerts_and_severities_that_exist() -> None:
    """Every alert name and severity the routes and inhibit rules match on is in alerts.yml."""
    text = ALERTMANAGER_CONFIG.read_text()
    config = yaml.safe_load(text)
    names = set(re.findall(r"\bHomemonitor\w+", text))
    severities = set(re.findall(r'severity="(\w+)"', text))
    receivers = {r["name"] for r in config["receivers"]}
    alerts = _alerts()
    assert set() == names - set(alerts)
    assert {rule["labels"]["severity"] for rule in alerts.values()} == severities
    assert set(RECEIVERS.values()) == receivers
    assert 4 <= len(config["inhibit_rules"])
    assert all(
        "example.invalid" in hook["url"]
        for r in config["receivers"]
        for hook in r["webhook_configs"]
    )


# -- docker-compose.yml ------------------------------------------------------------------


def test_compose_runs_alertmanager_and_grafana_offline_on_loopback() -> None:
    """Pinned images, loopback ports, read-only config, data volumes, wired to Prometheus."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    am, grafana = services["alertmanager"], services["grafana"]
    prometheus = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    provider = yaml.safe_load(
        (GRAFANA_DIR / "provisioning" / "dashboards" / "homemonitor.yml").read_text()
    )

    def mounts(service: dict[str, Any]) -> dict[str, str]:
        return {v.split(":")[1]: v for v in service["volumes"]}

    assert re.fullmatch(r"prom/alertmanager:v0\.\d+\.\d+", am["image"])
    assert re.fullmatch(r"grafana/grafana-oss:1[01]\.\d+\.\d+", grafana["image"])
    assert ["127.0.0.1:9093:9093"] == am["ports"]
    assert ["127.0.0.1:3000:3000"] == grafana["ports"]
    assert "./deploy/alertmanager:/etc/alertmanager:ro" == mounts(am)["/etc/alertmanager"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    assert (
        "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"
        == mounts(grafana)["/etc/grafana/provisioning"]
    )
    dashboards = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards}:ro" == mounts(grafana)[dashboards]
    assert {"alertmanager-data", "grafana-data"} <= set(compose["volumes"])
    assert "alertmanager-data:/alertmanager" == mounts(am)["/alertmanager"]
    assert "grafana-data:/var/lib/grafana" == mounts(grafana)["/var/lib/grafana"]
    env = grafana["environment"]
    assert "/run/secrets/grafana_admin_password" == env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    assert "grafana_admin_password" in grafana["secrets"]
    assert "grafana_admin_password" in (DEPLOY / "make-secrets.sh").read_text()
    assert "GF_INSTALL_PLUGINS" not in env
    assert {"true"} == {
        env[k] for k in ("GF_PLUGINS_PREINSTALL_DISABLED", "GF_SECURITY_DISABLE_GRAVATAR")
    }
    assert {"false"} == {
        env[k]
        for k in (
            "GF_ANALYTICS_REPORTING_ENABLED",
            "GF_ANALYTICS_CHECK_FOR_UPDATES",
            "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES",
            "GF_NEWS_NEWS_FEED_ENABLED",
        )
    }
    assert [{"static_configs": [{"targets": ["alertmanager:9093"]}]}] == prometheus["alerting"][
        "alertmanagers"
    ]
    assert all("healthcheck" in s for s in (am, grafana))
