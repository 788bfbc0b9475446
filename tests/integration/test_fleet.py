"""A fleet on one broker: a second gateway started with a `site.id` that a running gateway holds
is refused at start (the retained presence topic `<prefix>/<site>/presence`), and the id is free
again once the first one stops, cleanly or killed (its last will)."""

from __future__ import annotations

import json
import time

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, Gateway
from peer_mqtt import Broker, Subscriber, tools_missing

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")


def env(broker: Broker, site: str) -> dict[str, str]:
    return {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__SITE__ID": site,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
    }


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("fleet-broker"))
    b.start()
    yield b
    b.kill()


def refused(gateway_bin, tmp_path, broker: Broker, site: str, name: str) -> str:
    """Start a gateway that must exit on its own; its log."""
    gw = Gateway(gateway_bin, tmp_path / f"{name}.log", env(broker, site), name=name)
    gw.start()
    try:
        assert gw.proc is not None
        code = gw.proc.wait(timeout=60)
        assert code != 0, "the duplicate gateway kept running"
        return gw.log_path.read_text(errors="replace")
    finally:
        gw.stop()


def presence(broker: Broker, site: str) -> dict:
    sub = Subscriber(broker, f"fabrique/{site}/presence")
    try:
        return json.loads(sub.next(timeout=10)[1])
    finally:
        sub.close()


def test_a_second_gateway_with_the_same_id_is_refused(gateway_bin, broker, tmp_path):
    first = start_gateway(gateway_bin, tmp_path, env(broker, "truck-1"), "fleet-first")
    try:
        holder = presence(broker, "truck-1")
        assert holder["online"] is True, holder
        log = refused(gateway_bin, tmp_path, broker, "truck-1", "fleet-duplicate")
        assert "site.id `truck-1` is already online" in log, log[-2000:]
        assert holder["instance"] in log
        # Another id on the same broker runs side by side.
        other = start_gateway(gateway_bin, tmp_path, env(broker, "truck-2"), "fleet-other")
        stop_gateway(other)
        # The first one is still the holder, and still running.
        assert presence(broker, "truck-1")["instance"] == holder["instance"]
        assert first.proc is not None and first.proc.poll() is None
    finally:
        stop_gateway(first)
    assert presence(broker, "truck-1")["online"] is False


def test_a_killed_gateway_frees_its_id(gateway_bin, broker, tmp_path):
    first = start_gateway(gateway_bin, tmp_path, env(broker, "truck-3"), "fleet-killed")
    assert first.proc is not None
    first.proc.kill()
    first.proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while presence(broker, "truck-3")["online"]:
        assert time.monotonic() < deadline, "the last will did not free the id"
        time.sleep(0.2)
    again = start_gateway(gateway_bin, tmp_path, env(broker, "truck-3"), "fleet-again")
    stop_gateway(again)


def test_the_stop_travels_in_the_mqtt_payload_when_asked(gateway_bin, broker, tmp_path):
    values = Subscriber(broker, "fabrique/truck-5/Printing/Printer3D/NozzleTemperature")
    try:
        values.wait_ready("fabrique/truck-5/Printing/Printer3D/NozzleTemperature")
        gw = start_gateway(gateway_bin, tmp_path,
                           {**env(broker, "truck-5"), "FABRIQUE__MQTT__STOP_IN_PAYLOAD": "true"},
                           "fleet-stop")
        try:
            doc = json.loads(values.next(timeout=20)[1])
            assert doc["stop"] == "Lens", doc
            assert set(doc) == {"value", "quality", "status", "ts", "stop"}, doc
        finally:
            stop_gateway(gw)
    finally:
        values.close()
