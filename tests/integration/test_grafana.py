"""The provisioned Grafana dashboards (config/grafana): they type-check against @grafana/schema, and
every InfluxQL query they hold answers with data from a real InfluxDB 1.6 fed by a running gateway.

The type check needs config/grafana/node_modules (`npm ci` there; tests/run does it); the queries
need `influxd` (Debian `influxdb`). Without them these tests skip, except in CI where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV
from peer_influx import InfluxDB1
from peer_survey import Api
from test_influxdb import influx_config

IN_CI = os.environ.get("CI") == "true"
GRAFANA_DIR = Path(__file__).resolve().parents[2] / "config" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
TSC = GRAFANA_DIR / "node_modules" / ".bin" / "tsc"
DATASOURCE_UID = "fabrique-influxdb"
SITE = "fabrique-hdf"

# The simulated truck, fast, with kiosk orders flowing and some scrap so every counter moves.
ORDERS_ENV = {
    **FAST_SIMULATION_ENV,
    "FABRIQUE__SIMULATION__ORDERS_PER_HOUR": "600",
    "FABRIQUE__SIMULATION__DEFECT_RATE": "0.2",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, InfluxQL) for every panel target and every query variable."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} target {target['refId']}", target["query"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            out.append((f"variable ${variable['name']}", variable["query"]))
    return out


def substitute(query: str) -> str:
    """What Grafana sends for the dashboard's defaults: the last hour, 10 s buckets, one site."""
    query = query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "10s")
    query = query.replace("$site", re.escape(SITE)).replace("$stop", ".*")
    unknown = re.findall(r"\$\{?[A-Za-z_]\w*", query)
    assert not unknown, f"variables the test does not know ({unknown}): {query}"
    return query


# ---------------------------------------------------------------------------------------------
# Static checks and the type check


def test_dashboards_exist_and_use_the_provisioned_datasource():
    assert [p.name for p in DASHBOARDS] == ["fleet.json", "production.json", "visits.json"]
    provisioning = (GRAFANA_DIR / "provisioning" / "datasources" / "fabrique.yaml").read_text()
    assert f"uid: {DATASOURCE_UID}" in provisioning and "version: InfluxQL" in provisioning
    providers = (GRAFANA_DIR / "provisioning" / "dashboards" / "fabrique.yaml").read_text()
    assert "type: file" in providers and "path:" in providers
    for path in DASHBOARDS:
        dashboard = load(path)
        ids = [p["id"] for p in all_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID
                assert target.get("rawQuery") is True
                q = target["query"]
                assert "$timeFilter" in q, f"{panel['title']}: no $timeFilter in {q}"
                assert "GROUP BY time(" not in q or "GROUP BY time($__interval)" in q, q


def _type_check(source_json: str, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    # Module resolution looks for node_modules above the file: give it the installed one.
    link = workdir / "node_modules"
    if not link.exists():
        link.symlink_to(GRAFANA_DIR / "node_modules", target_is_directory=True)
    check = workdir / "check.ts"
    check.write_text(
        "import type { Dashboard } from '@grafana/schema';\n"
        f"const d: Dashboard = {source_json};\n"
        "export default d;\n",
        encoding="utf-8",
    )
    return subprocess.run(
        [str(TSC), "--noEmit", "--strict", "--target", "es2020", "--module", "esnext",
         "--moduleResolution", "bundler", str(check)],
        cwd=str(workdir), capture_output=True, text=True, timeout=180,
    )


@pytest.fixture(scope="module")
def tsc():
    if not TSC.is_file():
        message = "config/grafana/node_modules missing: run `npm ci` in config/grafana (tests/run does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return TSC


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_type_checks_against_grafana_schema(tsc, path, tmp_path):
    result = _type_check(path.read_text(encoding="utf-8"), tmp_path / "ok")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_type_check_rejects_a_broken_dashboard(tsc, tmp_path):
    dashboard = load(DASHBOARDS[0])
    dashboard["schemaVersion"] = "39"  # a string where the schema wants a number
    result = _type_check(json.dumps(dashboard, indent=2), tmp_path / "bad-version")
    assert result.returncode != 0 and "TS2322" in result.stdout, result.stdout + result.stderr
    dashboard = load(DASHBOARDS[0])
    dashboard["panels"][1]["gridPos"]["wide"] = 3  # a key the schema does not know
    result = _type_check(json.dumps(dashboard, indent=2), tmp_path / "bad-key")
    assert result.returncode != 0 and "wide" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Every query against InfluxDB 1.6 fed by the gateway


@pytest.fixture(scope="module")
def influxdb1(tmp_path_factory):
    if shutil.which("influxd") is None:
        if IN_CI:
            pytest.fail("`influxd` not found: install the Debian package influxdb")
        pytest.skip("`influxd` not found: install the Debian package influxdb")
    db = InfluxDB1(tmp_path_factory.mktemp("grafana-influxdb1"))
    db.start()
    db.query('CREATE DATABASE "fabrique"')
    yield db
    db.stop()


@pytest.fixture(scope="module")
def fed_influxdb(gateway_bin, influxdb1, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway-grafana")
    gw = start_gateway(gateway_bin, workdir, ORDERS_ENV, "grafana", args=influx_config(workdir, influxdb1.url, "v1"))
    # Visitors and survey answers for the visits dashboard, and one invalid answer.
    api = Api(gw.http_url)
    for body in [{"audience": "middle_school", "size": 24}, {"audience": "company", "size": 5}]:
        assert api.request("POST", "/api/visits", body)[0] == 201
    for audience, satisfaction, view_changed in [("middle_school", 4, True), ("company", 3, False), ("teacher", 1, True)]:
        body = {"audience": audience, "satisfaction": satisfaction, "view_changed": view_changed}
        assert api.request("POST", "/api/survey", body)[0] == 201
    assert api.request("POST", "/api/survey", {"audience": "nobody"})[0] == 400
    yield influxdb1
    stop_gateway(gw)


def _values(series: dict) -> list:
    return [v for row in series["values"] for v in row[1:] if v is not None and v != ""]


def _answer(db: InfluxDB1, query: str, positive: bool) -> list[dict]:
    """The series of an answer holding a value (non-null, non-empty; > 0 when `positive`)."""
    result = db.query(query)["results"][0]
    assert "error" not in result, f"{query}\n-> {result['error']}"
    return [
        s for s in result.get("series", []) if any(not positive or v > 0 for v in _values(s))
    ]


# Panels whose values must have moved past 0 (orders flowed through the whole line), so that the
# test does not pass on the zeros the gateway publishes at start.
POSITIVE = {
    "Parts delivered", "Parts scrapped", "Orders in progress", "Orders submitted",
    "Last cycle time per step", "Last cycle time (latest)", "CNC spindle", "Conveyor speed",
    "OEE", "Throughput", "Lead time per order", "OEE and its factors", "Cycle time per step (average)",
    # visits.json
    "Visitors, all stops", "Visitors at this stop", "Groups, all stops", "Responses, all stops",
    "Satisfied, all stops", "View changed, all stops", "Responses by stop", "Invalid responses refused",
    # fleet.json
    "Parts delivered by truck", "Visitors by truck (all stops)", "Survey responses by truck",
    "Satisfied by truck", "View changed by truck", "Orders submitted by truck",
    "Survey responses at this stop by truck",
}

# Grouped queries whose series count is known: the 9 steps, the 3 printer temperatures.
EXPECTED_SERIES = {
    "Step states": 9,
    "Last cycle time per step": 9,
    "Last cycle time (latest)": 9,
    "OEE and its factors": 4,
    "Cycle time per step (average)": 9,
    "3D printer temperatures": 3,
    "Visitors by audience (at this stop)": 10,
    "Satisfied by audience (all stops)": 10,
    "View changed by audience (all stops)": 10,
    # Every trade of the built-in catalogue (config/trades.toml).
    "Top trades (all stops)": sum(
        line == "[[trades]]"
        for line in (Path(__file__).resolve().parents[2] / "config" / "trades.toml").read_text().splitlines()
    ),
}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_returns_data(fed_influxdb, path):
    pending = {where: substitute(q) for where, q in queries(load(path))}
    assert len(pending) >= 15
    answers: dict[str, list[dict]] = {}
    started = time.monotonic()
    deadline = started + 240
    while pending and time.monotonic() < deadline:
        for where, query in list(pending.items()):
            positive = any(f"panel {title!r}" in where for title in POSITIVE)
            series = _answer(fed_influxdb, query, positive)
            want = next((n for title, n in EXPECTED_SERIES.items() if f"panel {title!r}" in where), 1)
            if len(series) >= want:
                answers[where] = series
                del pending[where]
        if pending:
            time.sleep(1)
    assert not pending, "no data after 240 s for:\n" + "\n".join(f"{w}: {q}" for w, q in pending.items())
    print(f"every query answered after {time.monotonic() - started:.0f} s")
    # A few values that must make sense, not only exist.
    site = answers["variable $site"][0]["values"]
    assert [SITE] == [v[1] for v in site], site
    if path.name == "fleet.json":
        # One truck in this test: every panel has its series, labelled by its site.
        last = lambda title: _values(answers[f"panel {title!r} target A"][0])[-1]  # noqa: E731
        for title in ("Stop of every truck", "Line state by truck", "Visitors by truck (all stops)"):
            assert {s["tags"]["site"] for s in answers[f"panel {title!r} target A"]} == {SITE}, title
        assert last("Stop of every truck") == "Lens"
        assert last("Visitors by truck (all stops)") == 29
        assert last("Survey responses by truck") == 3
        assert isinstance(last("Line state by truck"), str) and last("Line state by truck")
        return
    if path.name == "visits.json":
        last = lambda title: _values(answers[f"panel {title!r} target A"][0])[-1]  # noqa: E731
        assert last("Town") == "Lens"
        assert last("Visitors, all stops") == 29
        assert last("Responses, all stops") == 3
        assert last("Satisfied, all stops") == 100 * 2 / 3
        assert last("View changed, all stops") == 100 * 2 / 3
        assert last("Invalid responses refused") == 1
        return
    states = answers["panel 'Step states' target A"]
    assert {s["tags"]["tag"] for s in states} == {f"Line/Steps/Step{k}/State" for k in range(1, 10)}
    assert {v for s in states for row in s["values"] for v in row[1:] if v is not None} <= {"Idle", "Busy", "Blocked"}
    temps = answers["panel '3D printer temperatures' target A"]
    assert all(15 < v < 400 for s in temps for v in _values(s))
    verdicts = {v for s in answers["panel 'Metrology verdicts' target A"] for v in _values(s)}
    assert verdicts and verdicts <= {"OK", "NOK"}, verdicts
