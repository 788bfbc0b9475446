"""A fleet on one broker: a second gateway started with a `site.id` that a running gateway holds
is refused at start (the retained presence topic `<prefix>/<site>/presence`), and the id is free
again once the first one stops, cleanly or killed (its last will). Three gateways with their own
ids on one mosquitto and one VictoriaMetrics lose nothing across a broker outage of a minute."""

from __future__ import annotations

import json
import queue
import time

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, Gateway
from peer_influx import VictoriaMetrics
from peer_influx import tools_missing as influx_missing
from peer_mqtt import Broker, Subscriber, tools_missing
from peer_mqtt_publisher import PersistentBroker, parse_value_message, session_subscriber
from sink_counters import sink_counters, wait_until

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


COUNTER = "Synthetic/Load/T000000"
FLEET = ("truck-a", "truck-b", "truck-c")
OUTAGE_S = 60


def fleet_env(broker: Broker, victoria: VictoriaMetrics, site: str) -> dict[str, str]:
    return {
        **env(broker, site),
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "2",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "2",
        "FABRIQUE__INFLUXDB__ENABLED": "true",
        "FABRIQUE__INFLUXDB__URL": victoria.url,
        "FABRIQUE__INFLUXDB__FLUSH_MS": "200",
    }


def complete(values: set[int]) -> list[int]:
    """The values missing between the smallest and the largest."""
    return sorted(set(range(min(values), max(values) + 1)) - values)


@pytest.mark.skipif(influx_missing() is not None, reason=influx_missing() or "")
def test_three_trucks_lose_nothing_across_a_broker_outage_of_a_minute(gateway_bin, tmp_path):
    """mosquitto (persistent sessions) stopped for a minute while three gateways publish a
    2 Hz counter (QoS 1, disk buffers) and write it to VictoriaMetrics: once the broker is
    back, every value of every truck is on both sides, none missing, none mixed up."""
    (tmp_path / "broker").mkdir()
    broker = PersistentBroker(tmp_path / "broker")
    broker.start()
    (tmp_path / "victoria").mkdir()
    victoria = VictoriaMetrics(tmp_path / "victoria")
    victoria.start()
    topic_filter = f"fabrique/+/{COUNTER}"
    sub = session_subscriber(broker, topic_filter, "fleet-watcher")
    seen: dict[str, set[int]] = {site: set() for site in FLEET}
    gateways = []

    def collect(until, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; seen: " + str(
                {s: (min(v), max(v), len(v)) if v else None for s, v in seen.items()})
            try:
                t, payload = sub.messages.get(timeout=0.5)
            except queue.Empty:
                continue
            site = t.split("/")[1]
            assert site in seen and t == f"fabrique/{site}/{COUNTER}", t
            seen[site].add(int(parse_value_message(payload)["value"]))

    try:
        sub.wait_ready(f"fabrique/probe/{COUNTER}")
        for site in FLEET:
            gateways.append(start_gateway(gateway_bin, tmp_path, fleet_env(broker, victoria, site),
                                          f"fleet-{site}"))
        collect(lambda: all(len(v) >= 4 for v in seen.values()), 60, "values of every truck")
        broker.stop()
        sub.close()
        # What this subscriber got before the broker went away and the test did not read yet.
        time.sleep(0.5)
        collect(lambda: sub.messages.empty(), 5, "the rest of the first subscriber")
        outage_ends = time.monotonic() + OUTAGE_S
        # Every truck notices, and keeps its messages on disk.
        for gw in gateways:
            wait_until(lambda gw=gw: (c := sink_counters(gw, "Mqtt"))["Buffered"] > 10 and c["Retries"] > 0,
                       OUTAGE_S - 10, f"{gw.name}: Buffered > 10 during the outage")
        before = {site: max(v) for site, v in seen.items()}
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        broker.start()
        sub = session_subscriber(broker, topic_filter, "fleet-watcher")
        # A minute at 2 Hz: about 120 values per truck went through the disk buffers.
        target = {site: before[site] + 2 * OUTAGE_S + 10 for site in FLEET}
        collect(lambda: all(max(seen[s]) >= target[s] for s in FLEET), 90, "the backlog of every truck")
        for gw in gateways:
            wait_until(lambda gw=gw: sink_counters(gw, "Mqtt")["Buffered"] == 0, 30,
                       f"{gw.name}: an empty MQTT buffer")
        # Live values interleave with the backlog's replay, so the newest can arrive before
        # the oldest: read what the broker still delivers until no truck has a gap (a value
        # really lost keeps its gap, and the assertion below names it).
        try:
            collect(lambda: not any(complete(seen[s]) for s in FLEET), 30, "the whole backlog")
        except AssertionError:
            pass
        for site, gw in zip(FLEET, gateways):
            mqtt = seen[site]
            assert not complete(mqtt), f"{site}: values lost on MQTT: {complete(mqtt)}"
            counters = sink_counters(gw, "Mqtt")
            assert counters["Dropped"] == 0, (site, counters)
            # The same values in VictoriaMetrics, under this truck's site only.
            lo, hi = min(mqtt), target[site]

            def stored(site=site) -> set[int]:
                series = victoria.export(
                    f'{{__name__="fabrique_value",site="{site}",station="Synthetic",tag="T000000"}}')
                assert len(series) <= 1, [s["metric"] for s in series]
                return {int(v) for s in series for v in s["values"]}

            tsdb = wait_until(lambda: (v := stored()) and max(v) >= hi and v, 30,
                              f"{site}: the counter up to {hi} in VictoriaMetrics")
            window = set(range(lo, hi + 1))
            assert window <= tsdb, f"{site}: missing in VictoriaMetrics: {sorted(window - tsdb)}"
            assert window <= mqtt, f"{site}: missing on MQTT: {sorted(window - mqtt)}"
            assert sink_counters(gw, "InfluxDB")["Dropped"] == 0
    finally:
        sub.close()
        for gw in gateways:
            stop_gateway(gw)
        broker.kill()
        victoria.stop()
