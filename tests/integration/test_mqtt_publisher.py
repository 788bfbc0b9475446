"""The MQTT publisher (`[mqtt]`) against a real broker (mosquitto): topics, payloads, birth and
last will, and no gap in the values across a broker outage. See the README, section "MQTT publisher".
"""

from __future__ import annotations

import json
import queue
import time
from datetime import datetime

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV
from peer_mqtt import Broker, Subscriber, tools_missing
from sink_counters import sink_counters, wait_until
from peer_mqtt_publisher import (
    ArgsSubscriber,
    PersistentBroker,
    TlsBroker,
    parse_value_message,
    session_subscriber,
)

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")

SITE = "fabrique-hdf"
BASE = f"fabrique/{SITE}"
STATUS = f"{BASE}/status"


def mqtt_env(broker: Broker, **extra: str) -> dict[str, str]:
    return {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
        **extra,
    }


def wait_message(sub: Subscriber, topic: str, check=lambda payload: True, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            t, payload = sub.messages.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if t == topic and check(payload):
            return payload
    raise AssertionError(f"no matching message on {topic} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("mosquitto-pub"))
    b.start()
    yield b
    b.kill()


def test_values_status_birth_and_clean_offline(gateway_bin, broker, tmp_path):
    values = Subscriber(broker, f"{BASE}/#")
    try:
        values.wait_ready(f"{BASE}/probe")
        gw = start_gateway(gateway_bin, tmp_path, mqtt_env(broker), "mqtt-pub")
        try:
            latest: dict[str, str] = {}
            nozzle = f"{BASE}/Printing/Printer3D/NozzleTemperature"
            line = f"{BASE}/Line/PartsDelivered"

            def seen_both() -> bool:
                return nozzle in latest and line in latest and json.loads(latest[nozzle])["quality"] == "Good"

            deadline = time.monotonic() + 20
            while not seen_both() and time.monotonic() < deadline:
                try:
                    t, payload = values.messages.get(timeout=0.5)
                except queue.Empty:
                    continue
                latest[t] = payload
            assert seen_both(), f"topics seen: {sorted(latest)[:20]}"
            doc = parse_value_message(latest[nozzle])
            assert isinstance(doc["value"], (int, float)) and doc["status"] == 0, doc
            assert doc["ts"] is not None
            # Line tags sit below the site, by their path.
            assert isinstance(parse_value_message(latest[line])["value"], int)

            # A subscriber arriving later gets the retained birth at once.
            late = Subscriber(broker, STATUS)
            try:
                birth = json.loads(late.next(timeout=10)[1])
                assert birth["state"] == "online" and birth["site"] == SITE, birth
            finally:
                late.close()
        finally:
            stop_gateway(gw)
        # Clean stop: `offline`, published by the gateway itself before it disconnects.
        wait_message(values, STATUS, lambda p: json.loads(p)["state"] == "offline", timeout=10)
        assert "mqtt publisher stopped" in gw.log_path.read_text(errors="replace")
    finally:
        values.close()


def test_last_will_says_offline_when_the_gateway_is_killed(gateway_bin, broker, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path, mqtt_env(broker), "mqtt-pub-kill")
    status = Subscriber(broker, STATUS)
    try:
        wait_message(status, STATUS, lambda p: json.loads(p)["state"] == "online")
        gw.proc.kill()
        gw.proc.wait(timeout=10)
        wait_message(status, STATUS, lambda p: json.loads(p) == {"state": "offline"}, timeout=15)
    finally:
        status.close()
        stop_gateway(gw)


def test_a_broker_outage_leaves_no_gap_in_the_values(gateway_bin, tmp_path):
    """mosquitto stopped for 30 s: every value of a 2 Hz counter published meanwhile goes
    through the disk buffer and arrives after the broker is back (QoS 1, a subscriber with a
    persistent session); the counters over OPC UA show it."""
    (tmp_path / "broker").mkdir()
    broker = PersistentBroker(tmp_path / "broker")
    broker.start()
    topic = f"{BASE}/Synthetic/Load/T000000"
    env = mqtt_env(
        broker,
        FABRIQUE__SIMULATION__SYNTHETIC__TAGS="3",
        FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ="2",
    )
    sub = session_subscriber(broker, "fabrique/+/Synthetic/Load/T000000", "outage-watcher")
    gw = None
    seen: list[float] = []

    def collect(until, timeout: float, must: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            try:
                t, payload = sub.messages.get(timeout=0.5)
            except queue.Empty:
                continue
            if t == topic:
                seen.append(parse_value_message(payload)["value"])
        assert until() or not must, f"timed out; values seen: {seen}"

    try:
        sub.wait_ready("fabrique/probe/Synthetic/Load/T000000")
        gw = start_gateway(gateway_bin, tmp_path, env, "mqtt-pub-outage")
        collect(lambda: len(seen) >= 4, 20)
        sent_before = wait_until(lambda: sink_counters(gw, "Mqtt")["Sent"], 10, "Sent > 0")
        broker.stop()
        sub.close()
        # What this subscriber received before the broker went away and was not read yet.
        time.sleep(0.5)
        collect(lambda: sub.messages.empty(), 5)
        outage_ends = time.monotonic() + 30
        # While the broker is away the messages wait on disk.
        during = wait_until(
            lambda: (c := sink_counters(gw, "Mqtt"))["Buffered"] > 10 and c["Retries"] > 0 and c,
            25,
            "Buffered > 10 during the outage",
        )
        assert during["LastError"].startswith("broker "), during
        buffer_dir = gw.data_dir / "buffer" / "mqtt"
        assert any(p.stat().st_size > 0 for p in buffer_dir.glob("*.seg")), list(buffer_dir.iterdir())
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        broker.start()
        sub = session_subscriber(broker, "fabrique/+/Synthetic/Load/T000000", "outage-watcher")
        before = max(seen)
        # 30 s at 2 Hz (more with the reconnect backoff): about 60 values published while the
        # broker was away. Live values take turns with the backlog's replay (README, "Replay:
        # live data is not starved"), so a live value can come before the last buffered ones:
        # wait for the whole range, then name what is missing.

        def missing() -> list[int]:
            values = set(int(v) for v in seen)
            return sorted(set(range(min(values), max(values) + 1)) - values)

        collect(lambda: max(seen) >= before + 70 and not missing(), 60, must=False)
        assert max(seen) >= before + 70, f"no live values after the outage: {sorted(seen)[-5:]}"
        assert not missing(), f"values lost across the outage: {missing()}"
        # The disk buffer drains to nothing, and nothing stays counted in memory.
        def on_disk() -> int:
            total = 0
            for segment in buffer_dir.glob("*.seg"):
                try:
                    total += segment.stat().st_size
                except FileNotFoundError:  # drained and removed between glob and stat
                    pass
            return total

        wait_until(lambda: on_disk() == 0, 20, "an empty disk buffer")
        after = wait_until(
            lambda: (c := sink_counters(gw, "Mqtt"))["Buffered"] == 0 and c, 20, "Buffered back to 0"
        )
        assert after["Sent"] >= sent_before + 60 and after["Dropped"] == 0, after
        log = gw.log_path.read_text(errors="replace")
        assert "mqtt publisher lost the broker" in log
    finally:
        sub.close()
        if gw is not None:
            stop_gateway(gw)
        broker.kill()


def test_tls_and_password(gateway_bin, tmp_path):
    (tmp_path / "broker").mkdir()
    broker = TlsBroker(tmp_path / "broker", "gateway", "s3cret-pw")
    broker.start()
    sub = ArgsSubscriber(broker, f"{BASE}/#", broker.subscribe_args("gateway", "s3cret-pw"))
    env = mqtt_env(
        broker,
        FABRIQUE__MQTT__CA_FILE=str(broker.ca_file),
        FABRIQUE__MQTT__USERNAME="gateway",
        FABRIQUE__MQTT__PASSWORD_ENV="TEST_MQTT_PASSWORD",
        TEST_MQTT_PASSWORD="s3cret-pw",
    )
    gw = start_gateway(gateway_bin, tmp_path, env, "mqtt-pub-tls")
    try:
        wait_message(sub, STATUS, lambda p: json.loads(p)["state"] == "online")
        doc = parse_value_message(
            wait_message(sub, f"{BASE}/Printing/Printer3D/NozzleTemperature", timeout=20)
        )
        assert doc["quality"] in ("Good", "Bad")
        assert "s3cret-pw" not in gw.log_path.read_text(errors="replace")
    finally:
        sub.close()
        stop_gateway(gw)
        broker.kill()


def test_min_interval_publishes_the_latest_value_not_a_stale_one(gateway_bin, broker, tmp_path):
    topic = f"{BASE}/Synthetic/Load/T000000"
    sub = Subscriber(broker, topic)
    # A long interval makes the two behaviours far apart: the newest value is a few ms old when
    # it is published, the first change that came too early would be about 5 s old. The
    # threshold sits halfway, so a loaded machine's delivery delay does not decide the test.
    interval_s = 5
    env = mqtt_env(
        broker,
        FABRIQUE__SIMULATION__SYNTHETIC__TAGS="3",
        FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ="10",
        FABRIQUE__MQTT__MIN_INTERVAL_MS=str(interval_s * 1000),
    )
    gw = start_gateway(gateway_bin, tmp_path, env, "mqtt-pub-interval")
    try:
        wait_message(sub, topic)
        got: list[tuple[float, dict]] = []
        while len(got) < 3:
            _, payload = sub.messages.get(timeout=4 * interval_s)
            got.append((time.time(), parse_value_message(payload)))
        # 10 changes a second, one message an interval: about 50 values apart.
        steps = [b["value"] - a["value"] for (_, a), (_, b) in zip(got, got[1:])]
        assert all(40 <= s <= 70 for s in steps), steps
        for arrived, doc in got:
            ts = datetime.fromisoformat(doc["ts"][:26] + "+00:00").timestamp()
            # The value held when the interval elapses is the newest one, not the first change
            # that came too early.
            assert arrived - ts < interval_s / 2, (arrived - ts, doc)
    finally:
        sub.close()
        stop_gateway(gw)
