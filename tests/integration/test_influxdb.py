"""The InfluxDB sink against real databases: VictoriaMetrics (api v2) and InfluxDB 1.6 (api v1).

The gateway runs the simulated truck plus a few synthetic tags at 10 Hz, with `[influxdb]`
pointed at a database started on a free loopback port.
"""

from __future__ import annotations

import os
import time

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV
from peer_influx import InfluxDB1, VictoriaMetrics, tools_missing

pytestmark = pytest.mark.skipif(
    tools_missing() is not None and os.environ.get("CI") != "true", reason=tools_missing() or ""
)

SYNTHETIC_ENV = {
    "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "5",
    "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "10",
}


def influx_config(workdir, url: str, api: str) -> list[str]:
    path = workdir / "influx.toml"
    path.write_text(
        f"""[influxdb]
enabled = true
url = "{url}"
api = "{api}"
token_env = "FABRIQUE_TEST_INFLUX_TOKEN"
batch_size = 500
flush_ms = 200
queue_points = 200000
""",
        encoding="utf-8",
    )
    return ["--config", str(path)]


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def victoria(tmp_path_factory):
    vm = VictoriaMetrics(tmp_path_factory.mktemp("victoria"))
    vm.start()
    yield vm
    vm.stop()


@pytest.fixture(scope="module")
def vm_gateway(gateway_bin, victoria, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway-influx-vm")
    env = {**SYNTHETIC_ENV, "FABRIQUE_TEST_INFLUX_TOKEN": "any-token"}
    gw = start_gateway(gateway_bin, workdir, env, "influx-vm", args=influx_config(workdir, victoria.url, "v2"))
    yield gw
    stop_gateway(gw)


def test_points_arrive_with_their_tags(vm_gateway, victoria):
    series = wait_until(
        lambda: victoria.export('{__name__="fabrique_value",device="Printer3D",tag="NozzleTemperature"}'),
        30,
        "Printer3D/NozzleTemperature in VictoriaMetrics",
    )
    metric = series[0]["metric"]
    assert metric == {
        "__name__": "fabrique_value",
        "site": "fabrique-hdf",
        "stop": "Lens",
        "station": "Printing",
        "device": "Printer3D",
        "tag": "NozzleTemperature",
    }
    assert all(15 < v < 400 for v in series[0]["values"]), series[0]["values"][:10]
    quality = victoria.export('{__name__="fabrique_quality",device="Printer3D",tag="NozzleTemperature"}')
    assert quality and set(quality[0]["values"]) == {0}
    # Line tags carry neither station nor device.
    line = wait_until(
        lambda: victoria.export('{__name__="fabrique_value",tag="Orders/Submitted"}'), 30, "Orders/Submitted"
    )
    assert "station" not in line[0]["metric"] and "device" not in line[0]["metric"]
    # The synthetic load: one series per tag, 10 points a second.
    synthetic = wait_until(
        lambda: victoria.export('{__name__="fabrique_value",station="Synthetic",device="Load"}'),
        30,
        "synthetic tags",
    )
    assert {s["metric"]["tag"] for s in synthetic} >= {f"T{i:06d}" for i in range(5)}


def test_an_outage_is_retried_without_a_gap(vm_gateway, victoria):
    selector = '{__name__="fabrique_value",device="Load",tag="T000000"}'
    wait_until(lambda: victoria.export(selector), 30, "T000000 before the outage")
    time.sleep(1.5)
    stopped_at = time.time()
    victoria.stop()
    time.sleep(4)
    assert vm_gateway.proc.poll() is None, "the gateway must keep running without its database"
    victoria.start()
    restarted_at = time.time()

    def after_restart():
        series = victoria.export(selector, start_s=stopped_at - 3)
        if not series:
            return None
        ts = series[0]["timestamps"]
        return ts if ts and ts[-1] / 1000 > restarted_at + 2 else None

    ts = wait_until(after_restart, 40, "points written after the restart")
    window = [t for t in ts if stopped_at - 2 <= t / 1000 <= restarted_at + 2]
    gaps = [b - a for a, b in zip(window, window[1:])]
    assert window and window[0] / 1000 < stopped_at - 1 and window[-1] / 1000 > restarted_at + 1
    assert max(gaps) <= 400, f"gap of {max(gaps)} ms in a 10 Hz tag across the outage"
    log = vm_gateway.log_path.read_text(errors="replace")
    assert "InfluxDB write failed; retrying" in log
    assert "InfluxDB: writing again" in log
    assert "any-token" not in log


@pytest.fixture(scope="module")
def influxdb1(tmp_path_factory):
    db = InfluxDB1(tmp_path_factory.mktemp("influxdb1"))
    db.start()
    db.query('CREATE DATABASE "fabrique"')
    # A field type conflict made on purpose: `text` as a float. Every text line the gateway
    # writes is now rejected by InfluxDB, and must be dropped alone.
    status, body = db.write("fabrique,tag=Conflict text=1.0")
    assert status == 204, body
    yield db
    db.stop()


@pytest.fixture(scope="module")
def v1_gateway(gateway_bin, influxdb1, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway-influx-v1")
    gw = start_gateway(
        gateway_bin, workdir, FAST_SIMULATION_ENV, "influx-v1", args=influx_config(workdir, influxdb1.url, "v1")
    )
    yield gw
    stop_gateway(gw)


def test_v1_writes_answer_influxql_and_bad_lines_go_alone(v1_gateway, influxdb1):
    def nozzle():
        r = influxdb1.query(
            """SELECT last("value") FROM "fabrique" WHERE "device"='Printer3D' AND "tag"='NozzleTemperature'"""
        )
        return r["results"][0].get("series")

    series = wait_until(nozzle, 30, "InfluxQL answer for Printer3D/NozzleTemperature")
    assert 15 < series[0]["values"][0][1] < 400

    def rejected():
        log = v1_gateway.log_path.read_text(errors="replace")
        return "InfluxDB rejected a line; dropped" in log and log

    log = wait_until(rejected, 30, "a rejected text line in the gateway log")
    bad = [l for l in log.splitlines() if "InfluxDB rejected a line" in l]
    assert all("text=" in l for l in bad), bad[:3]
    # Numeric lines that shared a batch with a text line went in: the number of distinct
    # numeric series keeps growing while text lines are refused.
    tags = influxdb1.query('SHOW TAG VALUES FROM "fabrique" WITH KEY = "tag"')
    names = {v[1] for v in tags["results"][0]["series"][0]["values"]}
    assert "Status/Connected" in names and "NozzleTemperature" in names
    texts = influxdb1.query("""SELECT count("text") FROM "fabrique" WHERE "tag"<>'Conflict'""")
    assert "series" not in texts["results"][0], texts
