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
from sink_counters import read_value, sink_counters, wait_until

pytestmark = pytest.mark.skipif(
    tools_missing() is not None and os.environ.get("CI") != "true", reason=tools_missing() or ""
)

SYNTHETIC_ENV = {
    "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "5",
    "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "10",
}


def influx_config(workdir, url: str, api: str, extra: str = "") -> list[str]:
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
{extra}
""",
        encoding="utf-8",
    )
    return ["--config", str(path)]


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


def counter_runs(values: list[float]) -> list[list[int]]:
    """The synthetic counter T000000 (the round number, +1 at every change) split where it
    restarts (a new gateway process starts again from 1)."""
    runs: list[list[int]] = []
    for v in values:
        v = int(v)
        if runs and v == runs[-1][-1]:
            continue  # a batch written twice (replayed after a failed write): one point
        if not runs or v < runs[-1][-1]:
            runs.append([v])
        else:
            runs[-1].append(v)
    return runs


def assert_no_gap(run: list[int]) -> None:
    missing = sorted(set(range(run[0], run[-1] + 1)) - set(run))
    assert not missing, f"{len(missing)} values of the counter lost: {missing[:20]}"


def test_an_outage_is_retried_without_a_gap(vm_gateway, victoria):
    selector = '{__name__="fabrique_value",device="Load",tag="T000000"}'
    wait_until(lambda: victoria.export(selector), 30, "T000000 before the outage")
    time.sleep(1.5)
    sent_before = sink_counters(vm_gateway, "InfluxDB")["Sent"]
    stopped_at = time.time()
    victoria.stop()
    # While the database is away the points wait on disk; the counters say so.
    during = wait_until(
        lambda: (c := sink_counters(vm_gateway, "InfluxDB"))["Buffered"] > 0 and c["Retries"] > 0 and c,
        20,
        "Buffered > 0 during the outage",
    )
    assert during["LastError"] and during["Connected"] is False, during
    time.sleep(3)
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
    series = victoria.export(selector, start_s=stopped_at - 3)
    for run in counter_runs(series[0]["values"]):
        assert_no_gap(run)
    after = wait_until(
        lambda: (c := sink_counters(vm_gateway, "InfluxDB"))["BufferedOnDisk"] == 0 and c, 20, "the disk buffer drained"
    )
    assert after["Sent"] > sent_before and after["Dropped"] == 0 and after["Connected"], after
    log = vm_gateway.log_path.read_text(errors="replace")
    assert "InfluxDB write failed; retrying" in log
    assert "InfluxDB: writing again" in log
    assert "any-token" not in log


def test_a_gateway_killed_during_an_outage_loses_nothing_it_had_buffered(gateway_bin, victoria, tmp_path):
    """VictoriaMetrics away, the gateway killed (SIGKILL) and started again on the same data
    directory: what the first process buffered on disk is written after the database returns,
    gzip-compressed."""
    # Its own measurement: the module's other gateway writes the same series to `fabrique`.
    selector = '{__name__="restart_value",device="Load",tag="T000000"}'
    env = {**SYNTHETIC_ENV, "FABRIQUE_TEST_INFLUX_TOKEN": "any-token"}
    args = influx_config(tmp_path, victoria.url, "v2", 'gzip = true\nmeasurement = "restart"')
    gw = start_gateway(gateway_bin, tmp_path, env, "influx-restart", args=args)
    try:
        wait_until(lambda: victoria.export(selector), 30, "first points written")
        victoria.stop()
        wait_until(lambda: sink_counters(gw, "InfluxDB")["Buffered"] > 0, 20, "Buffered > 0")
        time.sleep(2)
        # A value the first process had a second and a half to put on disk (flush_ms = 200).
        last_known = int(read_value(gw, "Stations/Synthetic/Load/T000000"))
        time.sleep(1.5)
        gw.proc.kill()
        gw.proc.wait(timeout=10)
        buffered = sum(p.stat().st_size for p in (gw.data_dir / "buffer" / "influxdb").glob("*.seg"))
        assert buffered > 0
        stop_gateway(gw)
        # Same name and log directory: the same data directory.
        gw = start_gateway(gateway_bin, tmp_path, env, "influx-restart", args=args)
        time.sleep(2)
        victoria.start()

        def both_runs():
            series = victoria.export(selector)
            if not series:
                return None
            runs = counter_runs(series[0]["values"])
            # The second process's run must have gone on after the database came back.
            return runs if len(runs) == 2 and runs[0][-1] >= last_known and len(runs[1]) > 30 else None

        runs = wait_until(both_runs, 40, f"the first process's values up to {last_known}, then the second's")
        for run in runs:
            assert_no_gap(run)
        after = wait_until(
            lambda: (c := sink_counters(gw, "InfluxDB"))["BufferedOnDisk"] == 0 and c, 30, "the disk buffer drained"
        )
        assert after["Sent"] > 0 and after["Dropped"] == 0, after
        log = gw.log_path.read_text(errors="replace")
        assert "points buffered before the last stop will be written first" in log
    finally:
        stop_gateway(gw)


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
        gateway_bin,
        workdir,
        FAST_SIMULATION_ENV,
        "influx-v1",
        args=influx_config(workdir, influxdb1.url, "v1", "gzip = true"),
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
