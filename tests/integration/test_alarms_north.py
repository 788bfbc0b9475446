"""Alarms north: a device's communication alarm (a real pymodbus peer stopped) reaches a real
mosquitto (one topic per state change, the retained alarm list), a real InfluxDB 1.6
(measurement `alarms`) and the HTTP API (`GET /api/alarms`, `POST /api/alarms/{id}/ack` with
the admin token), and an acknowledgement made over HTTP is reported to OPC UA clients.
See the README, section "Alarms north".
"""

from __future__ import annotations

import asyncio
import json
import queue
import time
import urllib.error
import urllib.request

import pytest
from asyncua import ua
from asyncua.common.events import select_clauses_from_evtype

from fabrique_testlib import ADMIN_TOKEN, connect, wait_for
from peer_influx import InfluxDB1
from peer_influx import tools_missing as influx_missing
from peer_modbus import PeerProcess, free_port
from peer_mqtt import Broker, Subscriber
from peer_mqtt import tools_missing as mqtt_missing
from test_alarms import condition_id_through_base_event_type, of_type
from test_events import PRESS_CONFIG, Collector

pytestmark = pytest.mark.skipif(
    (mqtt_missing() or influx_missing()) is not None, reason=mqtt_missing() or influx_missing() or ""
)

ALARMS = "fabrique/fabrique-hdf/alarms"
PRESS_ALARM = "Stations/Partners/press/Communication"


def request(gw, method: str, path: str, body: bytes | None = None, token: str | None = None):
    """(status, decoded JSON) of an HTTP call to the gateway."""
    req = urllib.request.Request(gw.http_url + path, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


async def call(gw, method: str, path: str, body: bytes | None = None, token: str | None = None):
    return await asyncio.to_thread(request, gw, method, path, body, token)


def next_on(sub: Subscriber, topic: str, timeout: float = 30.0) -> dict | list:
    """The next message on `topic` (others are skipped), decoded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            t, payload = sub.messages.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if t == topic:
            return json.loads(payload)
    raise AssertionError(f"no message on {topic} within {timeout:.0f} s")


def retained_list(broker: Broker) -> list:
    """What a subscriber arriving now gets on the retained alarm list topic."""
    sub = Subscriber(broker, f"{ALARMS}/active")
    try:
        return next_on(sub, f"{ALARMS}/active", 15)
    finally:
        sub.close()


@pytest.fixture
def press_peer(tmp_path):
    peer = PeerProcess(tmp_path / "peer.log", port=free_port())
    peer.start()
    yield peer
    peer.kill()


@pytest.fixture
def broker(tmp_path):
    (tmp_path / "mosquitto").mkdir()
    b = Broker(tmp_path / "mosquitto")
    b.start()
    yield b
    b.kill()


@pytest.fixture
def influxdb(tmp_path):
    (tmp_path / "influxdb").mkdir()
    db = InfluxDB1(tmp_path / "influxdb")
    db.start()
    db.query('CREATE DATABASE "fabrique"')
    yield db
    db.stop()


async def test_an_alarm_goes_to_mqtt_influxdb_and_http_and_is_acknowledged_over_http(
    gateway_factory, tmp_path, press_peer, broker, influxdb
):
    config = tmp_path / "press.toml"
    config.write_text(
        PRESS_CONFIG.format(port=press_peer.port)
        + f"""
[mqtt]
enabled = true
broker = "{broker.address}"

[influxdb]
enabled = true
url = "{influxdb.url}"
api = "v1"
database = "fabrique"
flush_ms = 200
"""
    )
    changes = Subscriber(broker, f"{ALARMS}/#")
    changes.wait_ready(f"{ALARMS}/probe")
    gw = gateway_factory(name="alarms-north", args=["--config", str(config)])
    try:
        async with connect(gw) as opc:
            await wait_for(opc.node("Fabrique/Stations/Partners/press/Status/Connected").read_value, 30, what="press connected")
            status, body = await call(gw, "GET", "/api/alarms")
            assert status == 200
            assert body == {"active": [], "recent": []}

            off_normal = opc.client.get_node(ua.NodeId(ua.ObjectIds.OffNormalAlarmType))
            events = Collector()
            sub = await opc.client.create_subscription(50, events)
            evfilter = ua.EventFilter()
            evfilter.SelectClauses = condition_id_through_base_event_type(await select_clauses_from_evtype([off_normal]))
            evfilter.WhereClause = of_type(off_normal.nodeid)
            await sub.subscribe_alarms_and_conditions(opc.node("Fabrique/Stations/Partners"), off_normal, evfilter, queuesize=100)

            press_peer.kill()
            # MQTT: the state change on its own topic, then the list.
            raised = await asyncio.to_thread(next_on, changes, f"{ALARMS}/{PRESS_ALARM}")
            assert raised["id"] == PRESS_ALARM
            assert raised["source"] == "Stations/Partners/press"
            assert raised["condition"] == "Communication"
            assert raised["active"] is True and raised["acked"] is False and raised["retain"] is True
            assert raised["severity"] == 700
            assert "communication lost" in raised["message"]
            listed = await asyncio.to_thread(next_on, changes, f"{ALARMS}/active")
            assert [a["id"] for a in listed] == [PRESS_ALARM]
            assert [a["id"] for a in await asyncio.to_thread(retained_list, broker)] == [PRESS_ALARM]

            # HTTP: the alarm list and the recent changes.
            status, body = await call(gw, "GET", "/api/alarms")
            assert status == 200
            assert [a["id"] for a in body["active"]] == [PRESS_ALARM]
            assert body["active"][0]["event_id"] == raised["event_id"]
            assert [(a["id"], a["active"]) for a in body["recent"]] == [(PRESS_ALARM, True)]

            ack = f"/api/alarms/{PRESS_ALARM}/ack"
            comment = json.dumps({"comment": "from the tablet"}).encode()
            # Without the admin token, or with a wrong one: refused, nothing changes.
            assert (await call(gw, "POST", ack, comment))[0] == 401
            assert (await call(gw, "POST", ack, comment, token="wrong"))[0] == 401
            # Bad input: named, 4xx, nothing changes.
            status, body = await call(gw, "POST", "/api/alarms/Stations/Partners/nope/Communication/ack", comment, ADMIN_TOKEN)
            assert status == 404, body
            status, body = await call(gw, "POST", ack, b'{"coment": "typo"}', ADMIN_TOKEN)
            assert status == 400 and "coment" in body["error"], body
            status, body = await call(gw, "POST", ack, json.dumps({"comment": "x" * 1001}).encode(), ADMIN_TOKEN)
            assert status == 400 and "comment" in body["error"], body
            status, body = await call(gw, "POST", ack, json.dumps({"event_id": "00ff"}).encode(), ADMIN_TOKEN)
            assert status == 409, body
            status, body = await call(gw, "GET", "/api/alarms")
            assert body["active"][0]["acked"] is False

            status, body = await call(gw, "POST", ack, comment, ADMIN_TOKEN)
            assert status == 200, body
            assert body["acked"] is True and body["active"] is True and body["comment"] == "from the tablet"
            status, again = await call(gw, "POST", ack, comment, ADMIN_TOKEN)
            assert status == 409 and "already acknowledged" in again["error"], again

            # OPC UA clients see the acknowledgement made over HTTP.
            await wait_for(lambda: len(events.events) >= 2, 15, what="HTTP acknowledgement reported over OPC UA")
            acked = events.events[1]
            assert acked.get_event_props_as_fields_dict()["AckedState/Id"].Value is True
            assert acked.Comment.Text == "from the tablet"

            acked_msg = await asyncio.to_thread(next_on, changes, f"{ALARMS}/{PRESS_ALARM}")
            assert acked_msg["acked"] is True and acked_msg["comment"] == "from the tablet"
            # The list follows the change; once it has come, a new subscriber gets it retained.
            listed = await asyncio.to_thread(next_on, changes, f"{ALARMS}/active")
            assert [(a["id"], a["acked"]) for a in listed] == [(PRESS_ALARM, True)]
            listed = await asyncio.to_thread(retained_list, broker)
            assert [(a["id"], a["acked"]) for a in listed] == [(PRESS_ALARM, True)]

            # The device is back: inactive and acknowledged, the alarm stays listed until the
            # crew confirms it (Part 9: Retain until inactive, acknowledged and confirmed).
            press_peer.start()
            cleared = await asyncio.to_thread(next_on, changes, f"{ALARMS}/{PRESS_ALARM}", 60)
            assert cleared["active"] is False and cleared["retain"] is True
            listed = await asyncio.to_thread(next_on, changes, f"{ALARMS}/active")
            assert [(a["id"], a["active"]) for a in listed] == [(PRESS_ALARM, False)]
            confirm = f"/api/alarms/{PRESS_ALARM}/confirm"
            assert (await call(gw, "POST", confirm, comment))[0] == 401
            status, body = await call(gw, "POST", confirm, json.dumps({"comment": "checked"}).encode(), ADMIN_TOKEN)
            assert status == 200, body
            assert body["confirmed"] is True and body["retain"] is False and body["comment"] == "checked"
            status, again = await call(gw, "POST", confirm, b"", ADMIN_TOKEN)
            assert status == 409 and "already confirmed" in again["error"], again
            confirmed = await asyncio.to_thread(next_on, changes, f"{ALARMS}/{PRESS_ALARM}")
            assert confirmed["confirmed"] is True and confirmed["retain"] is False
            assert await asyncio.to_thread(next_on, changes, f"{ALARMS}/active") == []
            assert await asyncio.to_thread(retained_list, broker) == []
            status, body = await call(gw, "GET", "/api/alarms")
            assert body["active"] == []
            assert [(a["active"], a["acked"], a["confirmed"]) for a in body["recent"]] == [
                (False, True, True), (False, True, False), (True, True, False), (True, False, False)]

        # InfluxDB: one line per state change, in the measurement `alarms`.
        def rows():
            r = influxdb.query('SELECT * FROM "alarms" ORDER BY time')
            series = r["results"][0].get("series")
            if not series:
                return []
            cols = series[0]["columns"]
            return [dict(zip(cols, v)) for v in series[0]["values"]]

        deadline = time.monotonic() + 30
        while len(rows()) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        got = rows()
        assert [(r["active"], r["acked"], r["confirmed"]) for r in got] == [
            (True, False, False), (True, True, False), (False, True, False), (False, True, True)], got
        first = got[0]
        assert first["source"] == "Stations/Partners/press"
        assert first["condition"] == "Communication"
        assert first["site"] == "fabrique-hdf"
        assert first["severity"] == 700
        assert first["confirmed"] is False and first["enabled"] is True
        assert "communication lost" in first["message"]
        assert got[1]["comment"] == "from the tablet"
    finally:
        changes.close()
