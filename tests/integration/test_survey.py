"""The post-visit survey end to end: 10,000 responses over HTTP and MQTT at once, invalid ones
mixed in, the figures checked exactly in /api/stats, OPC UA and InfluxDB 1.6, then again after a
restart.

Peers: mosquitto (responses published with `mosquitto_pub -l`, QoS 1) and InfluxDB 1.6, both on
free loopback ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, connect, wait_for
from peer_influx import InfluxDB1
from peer_influx import tools_missing as influx_missing
from peer_mqtt import Broker
from peer_mqtt import tools_missing as mqtt_missing
from peer_survey import (
    AUDIENCES,
    BROWSE_NAMES,
    INVALID_SURVEY,
    Api,
    expected_survey,
    gateway_args,
    make_responses,
    survey_json_subset,
)

MISSING = mqtt_missing() or influx_missing()
pytestmark = pytest.mark.skipif(MISSING is not None and os.environ.get("CI") != "true", reason=MISSING or "")

RESPONSES = 10_000
SITE = "fabrique-hdf"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("survey-broker"))
    # mosquitto keeps at most 1000 messages queued per client by default and drops the rest;
    # a burst of 5,000 answers published faster than they are stored needs them all kept.
    b.config.write_text(b.config.read_text() + "max_queued_messages 0\n", encoding="utf-8")
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory):
    db = InfluxDB1(tmp_path_factory.mktemp("survey-influxdb"))
    db.start()
    db.query('CREATE DATABASE "fabrique"')
    yield db
    db.stop()


def publish_lines(broker: Broker, topic: str, lines: list[str]) -> subprocess.CompletedProcess:
    """Every line one QoS 1 message, as a tablet or a kiosk would send them."""
    payload = "\n".join(lines) + "\n"
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic, "-l"],
        input=payload.encode(),
        capture_output=True,
        timeout=300,
    )


def influx_last(influxdb: InfluxDB1, tag: str) -> tuple[float, str] | None:
    """The latest value of a tag's series and the stop it carries."""
    r = influxdb.query(f"""SELECT last("value") FROM "fabrique" WHERE "tag"='{tag}' GROUP BY "stop" """)
    series = r["results"][0].get("series")
    if not series:
        return None
    # The stop of the most recent point wins.
    latest = max(series, key=lambda s: s["values"][0][0])
    return latest["values"][0][1], latest["tags"]["stop"]


async def read_survey_tags(gw) -> dict[str, object]:
    paths = ["Responses", "Satisfied", "ViewChanged", "SatisfiedPct", "ViewChangedPct", "ResponsesAtStop",
             "SatisfiedPctAtStop", "ViewChangedPctAtStop", "Rejected"]
    for a in AUDIENCES:
        paths += [f"Audiences/{BROWSE_NAMES[a]}/{n}" for n in ("Responses", "SatisfiedPct", "ViewChangedPct")]
    async with connect(gw) as opc:
        values = await opc.read_many([f"Fabrique/Visits/Survey/{p}" for p in paths])
    return {p: v.Value.Value for p, v in zip(paths, values)}


def check_opcua(tags: dict, total, by_audience) -> None:
    assert tags["Responses"] == total.responses
    assert tags["Satisfied"] == total.satisfied
    assert tags["ViewChanged"] == total.view_changed
    assert tags["SatisfiedPct"] == total.satisfied_pct
    assert tags["ViewChangedPct"] == total.view_changed_pct
    # Every response was filed under the current stop.
    assert tags["ResponsesAtStop"] == total.responses
    assert tags["SatisfiedPctAtStop"] == total.satisfied_pct
    assert tags["ViewChangedPctAtStop"] == total.view_changed_pct
    for a in AUDIENCES:
        name = BROWSE_NAMES[a]
        assert tags[f"Audiences/{name}/Responses"] == by_audience[a].responses, a
        assert tags[f"Audiences/{name}/SatisfiedPct"] == by_audience[a].satisfied_pct, a
        assert tags[f"Audiences/{name}/ViewChangedPct"] == by_audience[a].view_changed_pct, a


def check_stats(stats: dict, total, by_audience) -> None:
    survey = stats["survey"]
    assert survey_json_subset(survey) == total.as_json()
    assert survey_json_subset(survey["current_stop"]) == total.as_json()
    for a in AUDIENCES:
        assert survey_json_subset(survey["by_audience"][a]) == by_audience[a].as_json(), a
        assert survey_json_subset(survey["current_stop"]["by_audience"][a]) == by_audience[a].as_json(), a
    assert sum(d["responses"] for d in survey["by_day"].values()) == total.responses
    assert {k: v["responses"] for k, v in survey["by_stop"].items()} == {stats["stop"]["town"]: total.responses}


def test_ten_thousand_responses_over_http_and_mqtt_are_counted_exactly(
    gateway_bin, broker, influxdb, tmp_path
):
    args = gateway_args(tmp_path, broker, influxdb)
    gw = start_gateway(gateway_bin, tmp_path, FAST_SIMULATION_ENV, "survey", args=args)
    api = Api(gw.http_url)
    topic = f"fabrique/{SITE}/survey/responses"

    async def subscribed():
        # The subscriber is up once the gateway logs it; messages before it would not be kept.
        return "mqtt subscriber connected" in gw.log_path.read_text(errors="replace")

    asyncio.run(wait_for(subscribed, 30, what="the MQTT subscriber to connect"))

    responses = make_responses(RESPONSES)
    over_http = responses[0::2]
    over_mqtt = responses[1::2]
    invalid_http = [body for body, _ in INVALID_SURVEY] * 10
    invalid_mqtt = [body for body, _ in INVALID_SURVEY] * 5

    def post(body) -> int:
        status, answer = api.request("POST", "/api/survey", body)
        return status

    with ThreadPoolExecutor(max_workers=12) as pool:
        mqtt_job = pool.submit(publish_lines, broker, topic, [json.dumps(r) for r in over_mqtt] + invalid_mqtt)
        # Valid and invalid interleaved, from 10 clients at once.
        mixed = []
        for i, r in enumerate(over_http):
            mixed.append(r)
            if i % 25 == 0 and invalid_http:
                mixed.append(invalid_http.pop())
        mixed += invalid_http
        statuses = list(pool.map(post, mixed))
        published = mqtt_job.result()
    assert published.returncode == 0, published.stderr
    valid_statuses = [s for s, body in zip(statuses, mixed) if isinstance(body, dict)]
    invalid_statuses = [s for s, body in zip(statuses, mixed) if not isinstance(body, dict)]
    assert valid_statuses == [201] * len(over_http)
    assert invalid_statuses == [400] * len(INVALID_SURVEY) * 10

    total, by_audience = expected_survey(responses)
    rejected = len(INVALID_SURVEY) * 15

    def all_counted():
        s = api.stats()
        return s["survey"]["responses"] == RESPONSES and s["survey"]["rejected"] == rejected and s

    stats = asyncio.run(
        wait_for(all_counted, 240, interval=0.5, what=lambda: f"{RESPONSES} responses (now {api.stats()['survey']['responses']}, rejected {api.stats()['survey']['rejected']})")
    )
    check_stats(stats, total, by_audience)
    assert stats["survey"]["rejected"] == rejected

    # OPC UA: the figures published after the last record.
    async def opc_settled():
        tags = await read_survey_tags(gw)
        return tags["Responses"] == RESPONSES and tags["Rejected"] == rejected and tags

    tags = asyncio.run(wait_for(opc_settled, 30, interval=0.5, what="Visits/Survey/Responses in OPC UA"))
    check_opcua(tags, total, by_audience)

    # InfluxDB: the latest value of each series, tagged with the current stop.
    def influx_settled():
        last = influx_last(influxdb, "Visits/Survey/Responses")
        return last is not None and last[0] == RESPONSES and last

    _, stop = asyncio.run(wait_for(influx_settled, 60, interval=0.5, what="Visits/Survey/Responses in InfluxDB"))
    assert stop == stats["stop"]["town"] == "Lens"
    assert influx_last(influxdb, "Visits/Survey/SatisfiedPct")[0] == total.satisfied_pct
    assert influx_last(influxdb, "Visits/Survey/ViewChangedPct")[0] == total.view_changed_pct
    for a in AUDIENCES:
        got = influx_last(influxdb, f"Visits/Survey/Audiences/{BROWSE_NAMES[a]}/SatisfiedPct")
        assert got is not None and got[0] == by_audience[a].satisfied_pct, a

    # One log line per kind of refusal and entry point, not one per message.
    log = gw.log_path.read_text(errors="replace")
    assert log.count("invalid survey response refused") <= 2 * len({k for _, k in INVALID_SURVEY})
    assert "panicked" not in log

    # Restarted: the same figures, from the database.
    stop_gateway(gw)
    gw = start_gateway(gateway_bin, tmp_path, FAST_SIMULATION_ENV, "survey", args=args)
    api = Api(gw.http_url)
    stats = api.stats()
    check_stats(stats, total, by_audience)

    async def opc_restored():
        tags = await read_survey_tags(gw)
        return tags["Responses"] == RESPONSES and tags

    tags = asyncio.run(wait_for(opc_restored, 30, interval=0.5, what="figures in OPC UA after the restart"))
    check_opcua(tags, total, by_audience)
    stop_gateway(gw)


def test_invalid_responses_get_400_with_the_reason_and_change_nothing(gateway_factory):
    gw = gateway_factory(name="survey-invalid")
    api = Api(gw.http_url)
    before = api.stats()
    for body, kind in INVALID_SURVEY:
        status, answer = api.request("POST", "/api/survey", body)
        assert status == 400, (body[:80], answer)
        assert answer["kind"] == kind, (body[:80], answer)
        assert answer["error"], answer
    after = api.stats()
    assert after["survey"]["rejected"] == before["survey"]["rejected"] + len(INVALID_SURVEY)
    for key in ("responses", "satisfied", "view_changed"):
        assert after["survey"][key] == before["survey"][key] == 0
    # A valid one with its own stop and time is filed there.
    status, answer = api.request(
        "POST",
        "/api/survey",
        {"audience": "teacher", "satisfaction": 2, "view_changed": False, "stop": "Béthune", "at": "2026-10-05T14:30:00+02:00"},
    )
    assert status == 201, answer
    assert answer["stop"] == "Béthune" and answer["at"] == "2026-10-05T12:30:00.000Z"
    stats = api.stats()
    assert stats["survey"]["by_stop"]["Béthune"]["responses"] == 1
    assert stats["survey"]["by_day"]["2026-10-05"]["satisfied_pct"] == 0.0
    assert stats["survey"]["current_stop"]["responses"] == 0
    scoped = api.stats(stop="B%C3%A9thune")
    assert scoped["scope"]["stop"] == "Béthune"
    assert scoped["survey"]["responses"] == 1 and scoped["survey"]["by_audience"]["teacher"]["responses"] == 1
