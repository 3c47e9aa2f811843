"""The Prometheus scrape example and the Grafana dashboard under ansible/prometheus/, checked statically: the
dashboard is valid JSON whose every query names only metrics the daemon exports (the documented list, and the
daemon's own registry), its PromQL parses (`promtool check rules`), and the scrape config passes
`promtool check config` (Debian's `prometheus` package, installed here like the converge test's tools).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import ansible_host

PROMETHEUS = Path(__file__).resolve().parent.parent / "ansible" / "prometheus"
DASHBOARD = PROMETHEUS / "grafana-kioskd.json"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
TARGETS_EXAMPLE = PROMETHEUS / "kioskd_targets.example.yml"

# The metrics of docs/protocol.md ("Metrics"), by type: what the dashboard may name.
HISTOGRAMS = ("kioskd_time_to_first_token_seconds", "kioskd_time_per_output_token_seconds",
              "kioskd_e2e_request_latency_seconds", "kioskd_request_queue_time_seconds",
              "kioskd_speech_recognition_seconds", "kioskd_speech_endpoint_seconds", "kioskd_tts_real_time_factor")
COUNTERS = ("kioskd_prompt_tokens_total", "kioskd_prompt_tokens_cached_total", "kioskd_generation_tokens_total",
            "kioskd_request_success_total", "kioskd_errors_total", "kioskd_busy_refusals_total",
            "kioskd_history_writes_deferred_total", "kioskd_history_writes_failed_total",
            "kioskd_knowledge_answers_total", "kioskd_speculative_proposed_tokens_total",
            "kioskd_speculative_accepted_tokens_total", "kioskd_speculative_batches_total")
GAUGES = ("kioskd_num_requests_waiting", "kioskd_num_requests_running", "kioskd_websockets_open",
          "kioskd_voice_available", "kioskd_model_loaded", "kioskd_model_info")
EXPORTED = {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")} | set(COUNTERS) | set(
    GAUGES)
# Prometheus' own series about each scrape.
SCRAPE_SERIES = {"up"}

# What is not a metric name in a PromQL expression: function names (followed by "("), aggregation modifiers with
# their label lists, label matchers, ranges, strings, numbers and Grafana's variables.
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    stripped = _VARIABLES.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))))
    stripped = _LABEL_LISTS.sub(" ", stripped)
    return {name for name, call in _IDENTIFIER.findall(stripped) if not call and name.lower() not in _KEYWORDS}


def test_metric_names_are_read_out_of_promql() -> None:
    """The parser the checks below rely on: functions, label lists, matchers and ranges are not metrics."""
    expr = ('histogram_quantile(0.95, sum by (le, instance) (rate(kioskd_time_to_first_token_seconds_bucket'
            '{job=~"$job", instance=~"a|b"}[$__rate_interval]))) / on (instance) group_left up{job="x"}'
            ' or vector(0) and kioskd_model_info offset 5m')
    assert metric_names(expr) == {"kioskd_time_to_first_token_seconds_bucket", "up", "kioskd_model_info"}


def _dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [str(t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            # Grafana's label_values(<selector>, <label>): the selector is PromQL.
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", str(variable["definition"]))
            assert found, variable
            exprs.append(found.group(1))
    return exprs


def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "kioskd-fleet" and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= set(variables), variables.keys()
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 15, len(panels)
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        # Every query goes to the chosen data source: importing the dashboard asks nothing else.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"].strip(), panel["title"]
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_the_dashboard_names_only_metrics_the_daemon_exports_and_shows_every_one() -> None:
    used: set[str] = set()
    for expr in _expressions(_dashboard()):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= EXPORTED | SCRAPE_SERIES, f"{expr!r} names unknown metrics: {names - EXPORTED - SCRAPE_SERIES}"
        used |= names
    # Every metric has a panel: histograms through their buckets, the rest by name.
    shown = {name.removesuffix("_bucket") for name in used}
    assert set(HISTOGRAMS) | set(COUNTERS) | set(GAUGES) <= shown, set(HISTOGRAMS + COUNTERS + GAUGES) - shown
    # The quantile panels read the p50 and the p95 of each histogram.
    for histogram in HISTOGRAMS:
        quantiles = {m.group(1) for e in _expressions(_dashboard()) if f"{histogram}_bucket" in e
                     for m in re.finditer(r"histogram_quantile\((0\.\d+)", e)}
        assert quantiles == {"0.5", "0.95"}, (histogram, quantiles)


def _registry_samples() -> set[str]:
    """The sample names the daemon's own registry exposes (daemon/metrics), through prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    from daemon.metrics import Metrics, Watched

    metrics = Metrics()
    metrics.watch(Watched(waiting=lambda: 0, running=lambda: 0, websockets=lambda: 0, voice_available=lambda: False,
                          model_loaded=lambda: True))
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        elif not family.name.endswith("_created"):  # prometheus_client's creation time of a counter or histogram
            names.add(family.name)
    return names


def test_the_metric_list_is_the_daemon_s_registry() -> None:
    """What the dashboard is checked against is what a kiosk's GET /metrics really has."""
    assert _registry_samples() == EXPORTED


def _promtool() -> Path | None:
    try:
        return ansible_host.ensure_tool("promtool", "prometheus")
    except (ansible_host.HostUnavailable, RuntimeError):
        return None


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule: `promtool check rules` parses it."""
    promtool = _promtool()
    if promtool is None:
        pytest.skip("no promtool (Debian's prometheus package) on this machine")
    variables = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}
    rules = []
    for number, expr in enumerate(_expressions(_dashboard())):
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"kioskd:dashboard_query_{number}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "grafana-kioskd", "rules": rules}]}))  # JSON is YAML
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout


def _scrape_config() -> dict[str, Any]:
    import yaml  # ships with ansible-core

    loaded = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_scrape_config_sends_the_token_from_a_file() -> None:
    """Every job scrapes /metrics with the API token read from a file (never inline), from a fixed list of kiosks
    or from file_sd files; the example targets file has the file_sd shape."""
    import yaml

    jobs = _scrape_config()["scrape_configs"]
    assert {job["job_name"] for job in jobs} == {"kioskd", "kioskd-file-sd"}
    for job in jobs:
        assert job["metrics_path"] == "/metrics", job
        assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"], job
        assert not {"bearer_token", "credentials"} & (set(job) | set(job["authorization"])), job
        assert ("static_configs" in job) != ("file_sd_configs" in job), job
        for group in job.get("static_configs", []):
            assert all(re.fullmatch(r"[\w.-]+:\d+", target) for target in group["targets"]), group
    targets = yaml.safe_load(TARGETS_EXAMPLE.read_text(encoding="utf-8"))
    assert targets and all(set(group) == {"targets", "labels"} for group in targets), targets


def test_promtool_accepts_the_scrape_config(tmp_path: Path) -> None:
    """`promtool check config` on the example, its token file and file_sd folder moved into tmp_path (promtool
    checks that both exist and reads the targets files)."""
    import yaml

    promtool = _promtool()
    if promtool is None:
        pytest.skip("no promtool (Debian's prometheus package) on this machine")
    config = _scrape_config()
    token = tmp_path / "kioskd_api_token"
    token.write_text("a-token\n")
    token.chmod(0o600)
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "lobby.yml").write_text(TARGETS_EXAMPLE.read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(token)
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(tmp_path / "targets" / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    # And it does check: a token file that is not there fails.
    token.unlink()
    result = subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0 and "kioskd_api_token" in result.stdout + result.stderr, result.stdout
