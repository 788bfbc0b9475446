"""Tour stops and group check-ins: the stop set by OPC UA and HTTP, kept across a restart, carried
by every record and every InfluxDB point; check-ins over HTTP and OPC UA; orders over MQTT."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
from asyncua import ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import ADMIN_TOKEN, FAST_SIMULATION_ENV, connect, status_name, wait_for
from peer_influx import InfluxDB1
from peer_influx import tools_missing as influx_missing
from peer_mqtt import Broker
from peer_mqtt import tools_missing as mqtt_missing
from peer_survey import AUDIENCES, BROWSE_NAMES, Api, gateway_args

MISSING = mqtt_missing() or influx_missing()
pytestmark = pytest.mark.skipif(MISSING is not None and os.environ.get("CI") != "true", reason=MISSING or "")


def s(text: str) -> ua.Variant:
    return ua.Variant(text, ua.VariantType.String)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("visits-broker"))
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory):
    db = InfluxDB1(tmp_path_factory.mktemp("visits-influxdb"))
    db.start()
    db.query('CREATE DATABASE "fabrique"')
    yield db
    db.stop()


def influx_stops(influxdb: InfluxDB1, tag: str) -> dict[str, float]:
    """Latest value of a tag's series per `stop` tag value."""
    r = influxdb.query(f"""SELECT last("value") FROM "fabrique" WHERE "tag"='{tag}' GROUP BY "stop" """)
    return {x["tags"]["stop"]: x["values"][0][1] for x in r["results"][0].get("series", [])}


def test_the_stop_is_set_at_run_time_kept_across_restarts_and_carried_everywhere(
    gateway_bin, broker, influxdb, tmp_path
):
    args = gateway_args(tmp_path, broker, influxdb)
    gw = start_gateway(gateway_bin, tmp_path, FAST_SIMULATION_ENV, "visits", args=args)
    api = Api(gw.http_url)
    assert api.request("GET", "/api/stop") == (
        200,
        {"town": "Lens", "venue": "Lycée Condorcet", "first_day": "2026-11-23", "last_day": "2026-11-27"},
    )

    async def by_opcua():
        async with connect(gw) as opc:
            assert await opc.read("Fabrique/Stop/Town") == "Lens"
            # Refused: dates not ISO, first after last, a blank town.
            for bad in [
                ("Arras", "Grand Place", "07/12/2026", "2026-12-11"),
                ("Arras", "Grand Place", "2026-12-12", "2026-12-11"),
                (" ", "Grand Place", "2026-12-07", "2026-12-11"),
            ]:
                result = await opc.call("Fabrique/Stop", "SetStop", *map(s, bad))
                assert status_name(result.StatusCode) == "BadInvalidArgument", bad
            assert await opc.read("Fabrique/Stop/Town") == "Lens"
            result = await opc.call("Fabrique/Stop", "SetStop", *map(s, ("Arras", "Grand Place", "2026-12-07", "2026-12-11")))
            assert result.StatusCode.is_good(), status_name(result.StatusCode)
            values = [await opc.read(f"Fabrique/Stop/{n}") for n in ("Town", "Venue", "FirstDay", "LastDay")]
            assert values == ["Arras", "Grand Place", "2026-12-07", "2026-12-11"]
            # A check-in by OPC UA is filed under the new stop.
            result = await opc.call(
                "Fabrique/Visits", "CheckIn", s("teacher"), ua.Variant(3, ua.VariantType.UInt32)
            )
            assert result.StatusCode.is_good(), status_name(result.StatusCode)
            result = await opc.call("Fabrique/Visits", "CheckIn", s("pirates"), ua.Variant(3, ua.VariantType.UInt32))
            assert status_name(result.StatusCode) == "BadInvalidArgument"
            result = await opc.call("Fabrique/Visits", "CheckIn", s("teacher"), ua.Variant(0, ua.VariantType.UInt32))
            assert status_name(result.StatusCode) == "BadInvalidArgument"

    asyncio.run(by_opcua())
    assert api.request("GET", "/api/stop")[1]["town"] == "Arras"
    status, answer = api.request("POST", "/api/visits", {"audience": "middle_school", "size": 24})
    assert status == 201 and answer["stop"] == "Arras", answer

    # InfluxDB points now carry the new stop.
    asyncio.run(
        wait_for(
            lambda: influx_stops(influxdb, "Visits/VisitorsTotal").get("Arras") == 27,
            60,
            interval=0.5,
            what="Visits/VisitorsTotal = 27 with stop=Arras in InfluxDB",
        )
    )

    # By HTTP, an admin endpoint: refused without the admin token, and with a wrong one.
    douai = {"town": "Douai", "venue": "Gayant Expo", "first_day": "2026-12-14", "last_day": "2026-12-18"}
    assert api.request("PUT", "/api/stop", douai)[0] == 401
    assert Api(gw.http_url, token="not-the-token").request("PUT", "/api/stop", douai)[0] == 401
    admin = Api(gw.http_url, token=ADMIN_TOKEN)
    # Refused with the reason, then set.
    for bad in [
        {"town": "Douai", "venue": "", "first_day": "2026-12-15", "last_day": "2026-12-14"},
        {"town": "Douai", "first_day": "2026-12-15"},
        {"town": "", "venue": "x", "first_day": "2026-12-14", "last_day": "2026-12-15"},
        {"town": "Douai", "venue": "x", "first_day": "2026-12-14", "last_day": "2026-12-15", "mayor": "?"},
    ]:
        status, answer = admin.request("PUT", "/api/stop", bad)
        assert status == 400 and answer["error"], (bad, answer)
    assert admin.request("PUT", "/api/stop", douai) == (200, douai)
    status, answer = api.request("POST", "/api/visits", {"audience": "job_seeker", "size": 12})
    assert status == 201 and answer["stop"] == "Douai"
    status, answer = api.request("POST", "/api/survey", {"audience": "job_seeker", "satisfaction": 3, "view_changed": True})
    assert status == 201 and answer["stop"] == "Douai"
    for bad in [{"audience": "job_seeker", "size": 0}, {"audience": "nobody", "size": 3}, {"audience": "company"}]:
        status, answer = api.request("POST", "/api/visits", bad)
        assert status == 400 and answer["error"], (bad, answer)

    stats = api.stats()
    visits = stats["visits"]
    assert visits["visitors_total"] == 39 and visits["groups_total"] == 3
    assert visits["visitors_at_stop"] == 12 and visits["current_stop"]["groups"] == 1
    assert visits["by_audience"]["middle_school"] == {"visitors": 24, "groups": 1}
    assert visits["by_audience"]["teacher"] == {"visitors": 3, "groups": 1}
    assert visits["by_stop"] == {"Arras": {"visitors": 27, "groups": 2}, "Douai": {"visitors": 12, "groups": 1}}
    assert visits["rejected"] == 3
    arras = api.stats(stop="Arras")
    assert arras["visits"]["visitors_total"] == 27 and arras["survey"]["responses"] == 0
    assert api.stats(stop="Douai")["survey"]["responses"] == 1

    asyncio.run(
        wait_for(
            lambda: influx_stops(influxdb, "Visits/VisitorsTotal").get("Douai") == 39,
            60,
            interval=0.5,
            what="Visits/VisitorsTotal = 39 with stop=Douai in InfluxDB",
        )
    )

    # Restarted with the same configuration: the stop set at run time is still the stop.
    stop_gateway(gw)
    gw = start_gateway(gateway_bin, tmp_path, FAST_SIMULATION_ENV, "visits", args=args)
    api = Api(gw.http_url)
    assert api.request("GET", "/api/stop") == (200, douai)
    assert api.stats()["visits"]["by_stop"]["Arras"]["visitors"] == 27

    async def after_restart():
        async with connect(gw) as opc:
            assert await opc.read("Fabrique/Stop/Town") == "Douai"
            assert await opc.read("Fabrique/Visits/VisitorsTotal") == 39
            assert await opc.read("Fabrique/Visits/VisitorsAtStop") == 12
            for a in AUDIENCES:
                want = {"middle_school": 24, "teacher": 3, "job_seeker": 12}.get(a, 0)
                assert await opc.read(f"Fabrique/Visits/Audiences/{BROWSE_NAMES[a]}/Visitors") == want, a

    asyncio.run(after_restart())
    stop_gateway(gw)


def test_orders_arrive_over_mqtt_like_submit_order(gateway_bin, broker, influxdb, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path, FAST_SIMULATION_ENV, "visits-orders", args=gateway_args(tmp_path, broker, influxdb))
    topic = "fabrique/fabrique-hdf/orders/submit"

    async def scenario():
        await wait_for(
            lambda: "mqtt subscriber connected" in gw.log_path.read_text(errors="replace"), 30, what="subscriber"
        )
        async with connect(gw) as opc:
            before = await opc.read("Fabrique/Orders/Submitted")
            for payload in ['{"model":"Classic","text":"Bonjour Lens"}', '{"model":"Unknown","text":"x"}', "not json",
                            '{"model":"Wave","text":"Merci"}']:
                subprocess.run(
                    ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic, "-m", payload],
                    check=True,
                    timeout=10,
                )

            async def two_more():
                return await opc.read("Fabrique/Orders/Submitted") == before + 2

            await wait_for(two_more, 30, what="two orders from MQTT")
        log = gw.log_path.read_text(errors="replace")
        assert "order from mqtt placed" in log and "order from mqtt refused" in log

    asyncio.run(scenario())
    stop_gateway(gw)
