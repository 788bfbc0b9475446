"""Operations: `GET /health`, `GET /health/ready`, `GET /metrics` and JSON logs.

A real Modbus peer (pymodbus) shows a device going from not ready to ready; the metrics are
parsed by the official Prometheus Python client's parser.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabrique_testlib import connect, wait_for
from peer_modbus import PRESS_CONFIG, PeerProcess, free_port


def http_get(url: str) -> tuple[int, str, str]:
    """(status, content type, body), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def scrape(gw) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    status, content_type, body = http_get(f"{gw.http_url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def device(station: str, name: str, protocol: str) -> tuple:
    return tuple(sorted({"station": station, "device": name, "protocol": protocol}.items()))


@pytest.fixture
def press_peer(tmp_path):
    peer = PeerProcess(tmp_path / "peer.log", port=free_port())
    yield peer
    peer.kill()


async def test_health_reports_each_device_and_follows_a_device_that_comes_and_goes(
    gateway_factory, tmp_path, press_peer
):
    config = tmp_path / "press.toml"
    config.write_text(PRESS_CONFIG.format(port=press_peer.port))
    gw = gateway_factory(name="health", args=["--config", str(config)])

    def press_health() -> dict:
        status, _, body = http_get(f"{gw.http_url}/health")
        assert status == 200, body
        health = json.loads(body)
        assert health["live"] is True
        return next(d for d in health["devices"] if d["device"] == "press")

    # The peer is not started yet: the gateway is live but not ready, and says why.
    await wait_for(lambda: press_health()["last_error"], timeout=20, what="press error")
    press = press_health()
    assert press == {**press, "station": "Partners", "protocol": "modbus", "ready": False}
    status, _, body = http_get(f"{gw.http_url}/health/ready")
    assert status == 503 and json.loads(body)["ready"] is False
    simulated = [d for d in json.loads(body)["devices"] if d["protocol"] == "simulator"]
    assert simulated and all(d["ready"] for d in simulated)

    press_peer.start()
    await wait_for(lambda: press_health()["ready"], timeout=30, what="press ready")
    assert "last_error" not in press_health()
    await wait_for(lambda: http_get(f"{gw.http_url}/health/ready")[0] == 200, timeout=10,
                   what="whole gateway ready")

    samples = scrape(gw)
    press_labels = device("Partners", "press", "modbus")
    assert samples[("fabrique_device_connected", press_labels)] == 1
    assert samples[("fabrique_device_requests_ok_total", press_labels)] >= 1


async def test_metrics_parse_and_move_as_the_gateway_works(gateway):
    first = scrape(gateway)
    for name in ("fabrique_bus_changes_total", "fabrique_bus_changes_per_second", "fabrique_tags",
                 "process_resident_memory_bytes", "process_cpu_seconds_total",
                 "fabrique_opcua_sessions", "fabrique_opcua_subscriptions"):
        assert (name, ()) in first, name
    assert first[("fabrique_tags", ())] > 100
    assert first[("process_resident_memory_bytes", ())] > 1_000_000
    printer = device("Printing", "Printer3D", "simulator")
    assert first[("fabrique_device_connected", printer)] == 1

    async with connect(gateway):
        await wait_for(lambda: scrape(gateway)[("fabrique_opcua_sessions", ())] >= 1,
                       timeout=10, what="session counted")
        second = scrape(gateway)
    # The simulated truck never stops moving: the bus counter only grows.
    await wait_for(
        lambda: scrape(gateway)[("fabrique_bus_changes_total", ())] > first[("fabrique_bus_changes_total", ())],
        timeout=10, what="bus changes counted")
    assert second[("fabrique_opcua_sessions_created_total", ())] > first[("fabrique_opcua_sessions_created_total", ())]


async def test_json_logs_are_one_object_per_line(gateway_factory):
    gw = gateway_factory(name="jsonlogs", env={"FABRIQUE__LOG__FORMAT": "json"})
    await wait_for(lambda: "gateway ready" in Path(gw.log_path).read_text(errors="replace"),
                   timeout=20, what="ready logged")
    events = []
    for line in Path(gw.log_path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    ready = [e for e in events if e.get("message") == "gateway ready"]
    assert ready, events[-5:]
    assert ready[0]["level"] == "INFO"
    assert "endpoint" in ready[0] and "tags" in ready[0]


async def test_a_sink_is_ready_while_its_broker_is_there(gateway_factory, tmp_path):
    from peer_mqtt import Broker

    (tmp_path / "mosquitto").mkdir()
    broker = Broker(tmp_path / "mosquitto")
    broker.start()
    try:
        gw = gateway_factory(name="sinkhealth", env={
            "FABRIQUE__MQTT__ENABLED": "true",
            "FABRIQUE__MQTT__BROKER": broker.address,
        })

        def mqtt_sink() -> dict:
            health = json.loads(http_get(f"{gw.http_url}/health")[2])
            return next(s for s in health["sinks"] if s["sink"] == "Mqtt")

        await wait_for(lambda: mqtt_sink()["ready"], timeout=20, what="MQTT sink ready")
        sent = ("fabrique_sink_sent_total", (("sink", "Mqtt"),))
        first = await wait_for(lambda: scrape(gw).get(sent), timeout=10, what="messages sent")
        assert scrape(gw)[("fabrique_sink_connected", (("sink", "Mqtt"),))] == 1

        broker.kill()
        await wait_for(lambda: not mqtt_sink()["ready"], timeout=20, what="MQTT sink not ready")
        assert mqtt_sink()["last_error"]
        assert http_get(f"{gw.http_url}/health/ready")[0] == 503
        assert scrape(gw)[("fabrique_sink_connected", (("sink", "Mqtt"),))] == 0

        broker.start()
        await wait_for(lambda: mqtt_sink()["ready"], timeout=30, what="MQTT sink ready again")
        await wait_for(lambda: scrape(gw)[sent] > first, timeout=20, what="messages sent again")
    finally:
        broker.kill()
