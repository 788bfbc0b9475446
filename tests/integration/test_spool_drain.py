"""Back online, the backlog of an outage drains without starving live data.

The MQTT publisher keeps what it could not send in its disk buffer; when the broker is back, the
disk buffer (oldest first) and the live changes take turns. mosquitto is stopped for 20 s while
500 synthetic tags change at 4 Hz (2,000 messages a second, about 40,000 buffered): once it is
back, a live value of the counter `T000000` (newer than any value of the outage) reaches the
subscriber before the last value of the outage does, and no value is lost. Before, the whole
backlog went first and live changes waited behind it (and could overflow the memory queue).
"""

from __future__ import annotations

import queue
import time

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV
from peer_mqtt import tools_missing
from peer_mqtt_publisher import PersistentBroker, parse_value_message, session_subscriber
from sink_counters import read_value, sink_counters, wait_until

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")

SITE = "truck-drain"
COUNTER = f"fabrique/{SITE}/Synthetic/Load/T000000"
OUTAGE_S = 20


def test_live_values_flow_while_the_backlog_drains(gateway_bin, tmp_path):
    (tmp_path / "broker").mkdir()
    broker = PersistentBroker(tmp_path / "broker")
    broker.start()
    env = {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__SITE__ID": SITE,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "500",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "4",
    }
    sub = session_subscriber(broker, COUNTER, "drain-watcher")
    received: list[int] = []
    before = 0
    gw = None

    def missing() -> list[int]:
        values = set(received)
        return sorted(set(range(min(values), max(values) + 1)) - values) if values else []

    def collect(until, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, (
                f"timed out waiting for {what}; values after the outage {received[before:][:60]}…, "
                f"missing {missing()[:40]}")
            try:
                _t, payload = sub.messages.get(timeout=0.5)
            except queue.Empty:
                continue
            received.append(int(parse_value_message(payload)["value"]))

    try:
        sub.wait_ready(f"fabrique/{SITE}/Synthetic/Load/T000000")
        gw = start_gateway(gateway_bin, tmp_path, env, "spool-drain")
        collect(lambda: len(received) >= 4, 30, "the counter")
        broker.stop()
        sub.close()
        # What this subscriber got before the broker went away and the test did not read yet.
        time.sleep(0.5)
        collect(lambda: sub.messages.empty(), 5, "the rest of the first subscriber")
        outage_ends = time.monotonic() + OUTAGE_S
        wait_until(lambda: sink_counters(gw, "Mqtt")["BufferedOnDisk"] > 10_000, OUTAGE_S + 30,
                   "a backlog of more than 10,000 messages on disk")
        time.sleep(max(0.0, outage_ends - time.monotonic()))
        # The last value of the outage: everything up to here was buffered on disk.
        last_of_outage = int(read_value(gw, "Stations/Synthetic/Load/T000000"))
        before = len(received)
        broker.start()
        sub = session_subscriber(broker, COUNTER, "drain-watcher")
        # Nothing is lost: every value of the counter arrives, up to live values newer than the
        # outage (the backlog ends with what was buffered until the gateway reconnected).
        collect(lambda: len(received) > before and max(received[before:]) >= last_of_outage + 20
                and not missing(), 120, "every value of the counter, and live ones")
        after = received[before:]
        # Live first: a value newer than some backlog value reached the subscriber before it.
        # The whole backlog first would keep `after` in ascending order (the backlog in order,
        # then live values, all newer); a repeated message is no inversion.
        inversions = [j for j in range(1, len(after))
                      if after[j] < max(after[:j]) and after[j] not in after[:j]]
        assert inversions, f"the backlog went first, live values behind it: {after}"
        assert after[inversions[0]] <= last_of_outage
        wait_until(lambda: sink_counters(gw, "Mqtt")["BufferedOnDisk"] == 0, 120, "an empty disk buffer")
        assert sink_counters(gw, "Mqtt")["Dropped"] == 0
    finally:
        sub.close()
        if gw is not None:
            stop_gateway(gw)
        broker.kill()
