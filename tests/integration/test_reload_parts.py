"""Reloading more than the devices: the sinks, the OPC UA users and the stop, each applied while
an OPC UA session stays open; any other change refused, naming its keys.

One gateway with the MQTT, InfluxDB and Sparkplug sinks on (real mosquitto brokers and
VictoriaMetrics), a synthetic counter tag, and its own `[[opcua.users]]`. The configuration file
is rewritten and reloaded over HTTP (or with SIGHUP).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import time

import pytest
from asyncua import ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import ADMIN_TOKEN, FAST_SIMULATION_ENV, connect, wait_for
from peer_influx import VictoriaMetrics
from peer_influx import tools_missing as influx_missing
from peer_mqtt import Broker, Subscriber
from peer_mqtt import tools_missing as mqtt_missing
from peer_survey import Api
from sink_counters import read_value, sink_counters, wait_until

pytestmark = pytest.mark.skipif(
    (mqtt_missing() or influx_missing()) is not None and os.environ.get("CI") != "true",
    reason=mqtt_missing() or influx_missing() or "",
)

SITE = "fabrique-hdf"
COUNTER = f"fabrique/{SITE}/Synthetic/Load/T000000"
ENV = {
    **FAST_SIMULATION_ENV,
    "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "3",
    "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "5",
    "FABRIQUE_TEST_INFLUX_TOKEN": "any-token",
}
OPERATOR_HASH = "$argon2id$v=19$m=19456,t=2,p=1$gUpiut9Z4tMNfwbRXaJ8lg$EpZe0Jezq0H1noW8FvIHTHK0WbMkpLfKOQVsu/b+JVU"


def hashed(gateway_bin, password: str) -> str:
    out = subprocess.run(
        [str(gateway_bin), "hash-password"], input=password, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def setup(gateway_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("reload-parts")
    brokers = {}
    for name in ("a", "b"):
        (work / name).mkdir()
        brokers[name] = Broker(work / name)
        brokers[name].start()
    (work / "vm").mkdir()
    vm = VictoriaMetrics(work / "vm")
    vm.start()
    hashes = {name: hashed(gateway_bin, f"{name}-pw") for name in ("alice", "bob")}
    path = work / "gateway.toml"

    def write(broker="a", group="g1", measurement="fabrique", users=("alice",), town="Lens", extra=""):
        people = "".join(
            f'[[opcua.users]]\nname = "{u}"\npassword_hash = "{hashes[u]}"\nrole = "viewer"\n\n' for u in users
        )
        path.write_text(
            f"""{extra}
[stop]
town = "{town}"
venue = "Lycée"
first_day = "2026-11-23"
last_day = "2026-11-27"

[mqtt]
enabled = true
broker = "{brokers[broker].address}"
disk_buffer_mb = 16

[influxdb]
enabled = true
url = "{vm.url}"
api = "v2"
token_env = "FABRIQUE_TEST_INFLUX_TOKEN"
flush_ms = 200
measurement = "{measurement}"

[sparkplug]
enabled = true
broker = "{brokers[broker].address}"
group_id = "{group}"

[[opcua.users]]
name = "operator"
password_hash = "{OPERATOR_HASH}"
role = "operator"

{people}""",
            encoding="utf-8",
        )

    write()
    gw = start_gateway(gateway_bin, work, ENV, "reload-parts", args=["--config", str(path)])
    yield gw, brokers, vm, write
    stop_gateway(gw)
    for broker in brokers.values():
        broker.kill()
    vm.stop()


def reload(gw) -> tuple[int, dict]:
    return Api(gw.http_url, token=ADMIN_TOKEN).request("POST", "/api/admin/reload")


def counter_values(sub: Subscriber) -> list[int]:
    values = []
    while True:
        try:
            topic, payload = sub.messages.get_nowait()
        except queue.Empty:
            return values
        if topic == COUNTER:
            values.append(int(json.loads(payload)["value"]))


async def test_sinks_restart_with_their_new_sections_and_keep_their_buffer(setup):
    gw, brokers, vm, write = setup
    write()
    assert reload(gw)[0] == 200
    on_b = Subscriber(brokers["b"], "fabrique/#")
    # Sparkplug payloads are binary: only their topics are printed (`-F %t`).
    births = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(brokers["b"].port), "-F", "%t", "-t", "spBv1.0/g2/#"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        on_b.wait_ready("fabrique/probe/ready")
        async with connect(gw) as opc:
            # Broker A goes away: the MQTT sink keeps the counter in its disk buffer.
            brokers["a"].kill()
            await asyncio.to_thread(
                wait_until,
                lambda: sink_counters(gw, "Mqtt")["BufferedOnDisk"] > 5,
                30,
                "the MQTT sink buffering on disk",
            )
            during_outage = (await opc.read("Fabrique/Stations/Synthetic/Load/T000000"))

            # Both MQTT sinks move to broker B, InfluxDB to another measurement.
            write(broker="b", group="g2", measurement="moved")
            status, body = await asyncio.to_thread(reload, gw)
            assert status == 200, body
            assert body["sinks"] == ["Mqtt", "InfluxDB", "Sparkplug"], body
            assert body["added"] == body["removed"] == body["changed"] == [], body

            # What was buffered during the outage reaches broker B, then the live values.
            received: list[int] = []

            def caught_up() -> bool:
                received.extend(counter_values(on_b))
                return bool(received) and max(received) > during_outage + 10

            await asyncio.to_thread(wait_until, caught_up, 60, "the counter on broker B")
            assert min(received) <= during_outage, (during_outage, sorted(received)[:10])
            present = set(received)
            missing = [v for v in range(min(received), max(received)) if v not in present]
            assert missing == [], missing[:20]

            # Sparkplug births on the new group; InfluxDB writes the new measurement.
            births.terminate()
            topics, _ = births.communicate(timeout=10)
            assert any(t.startswith("spBv1.0/g2/NBIRTH/") for t in topics.splitlines()), topics[:500]
            await asyncio.to_thread(
                wait_until, lambda: vm.export('{__name__="moved_value"}'), 30, "points of `moved`"
            )
            # The session opened before the reload is still the one reading.
            assert (await opc.read("Fabrique/Stations/Synthetic/Load/T000000")) > during_outage
        assert "configuration reloaded" in gw.log_tail()
    finally:
        on_b.close()
        if births.poll() is None:
            births.kill()
        brokers["a"].start()
        write()
        reload(gw)


async def test_users_change_for_new_logins_and_open_sessions_stay(setup):
    gw, _, _, write = setup
    write(users=("alice",))
    assert reload(gw)[0] == 200
    async with connect(gw, "alice", "alice-pw") as alice:
        write(users=("bob",))
        status, body = await asyncio.to_thread(reload, gw)
        assert status == 200, body
        assert body["users"] == ["alice", "bob"], body
        # The open session carries on.
        assert (await alice.read("Fabrique/Stop/Town"))
        # A new login as alice is refused; bob's works.
        with pytest.raises(ua.UaStatusCodeError) as refused:
            async with connect(gw, "alice", "alice-pw"):
                pass
        assert "BadUserAccessDenied" in type(refused.value).__name__ or refused.value.code == ua.StatusCodes.BadUserAccessDenied
        async with connect(gw, "bob", "bob-pw") as bob:
            assert (await bob.read("Fabrique/Stop/Town"))
        assert (await alice.read("Fabrique/Stop/Town"))
    write()
    assert reload(gw)[0] == 200


async def test_the_stop_follows_the_file_on_sighup(setup):
    gw, _, _, write = setup
    async with connect(gw) as opc:
        write(town="Arras")
        gw.proc.send_signal(signal.SIGHUP)

        async def arras() -> bool:
            return (await opc.read("Fabrique/Stop/Town")) == "Arras"

        await wait_for(arras, 20, what="Stop/Town showing Arras after SIGHUP")
        status, stop = await asyncio.to_thread(Api(gw.http_url, token=ADMIN_TOKEN).request, "GET", "/api/stop")
        assert status == 200 and stop["town"] == "Arras", stop
    assert 'Some("Arras")' in gw.log_tail(), gw.log_tail(20)
    write()
    assert reload(gw)[0] == 200


def test_other_changes_are_refused_naming_their_keys(setup):
    gw, _, _, write = setup
    write(extra="[bus]\ncapacity = 77\n\n[opcua.limits]\nmax_sessions = 7\n", town="Douai")
    status, body = reload(gw)
    assert status == 400, body
    assert body["needs_restart"] == ["bus.capacity", "opcua.limits.max_sessions"], body
    assert "`bus.capacity`, `opcua.limits.max_sessions` need a restart" in body["error"], body
    assert "reload refused" in gw.log_tail()
    # Nothing was applied, the stop included.
    assert read_value(gw, "Stop/Town") != "Douai"
    write()
    status, body = reload(gw)
    assert status == 200, body
    assert time.time()  # the gateway still answers
