"""The survey's trades question: answers naming trades of the catalogue, from every audience
(parents and guidance counsellors included) and several stops. `/api/stats` gives each trade's
count and share overall, per stop and per audience, exactly what a recomputation from the answers
sent and from the stored rows (visits.sqlite, read here with Python's sqlite3) gives, and the
same after a restart; OPC UA shows the counts under Visits/Survey/Trades. Answers published over
MQTT (mosquitto) are counted the same, an unknown trade is refused, and InfluxDB 1.6 gets the
counts."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections import Counter, defaultdict

import pytest

from conftest import stop_gateway
from fabrique_testlib import connect, wait_for
from peer_influx import InfluxDB1
from peer_influx import tools_missing as influx_missing
from peer_mqtt import Broker
from peer_mqtt import tools_missing as mqtt_missing
from peer_survey import AUDIENCES, Api, gateway_args

MISSING = mqtt_missing() or influx_missing()

CURRENT_STOP = "Lens"


def pct(part: int, whole: int) -> float:
    return 0.0 if whole == 0 else 100 * part / whole


def make_answers(ids: list[str], n: int) -> list[dict]:
    rng = random.Random(12)
    popular = ids[:8]
    out = []
    for i in range(n):
        answer = {
            "audience": AUDIENCES[i % len(AUDIENCES)],
            "satisfaction": rng.choice([4, 4, 3, 2]),
            "view_changed": rng.random() < 0.5,
        }
        k = rng.choice([0, 0, 1, 2, 3])
        if k:
            answer["trades"] = rng.sample(popular, k - 1) + rng.sample(ids, 1)
        if i % 4 == 1:
            answer["stop"] = "Arras"
        elif i % 4 == 2:
            answer["stop"] = "Douai"
        out.append(answer)
    return out


def expected(answers: list[dict], ids: list[str]) -> dict:
    """`trades`, `trades_by_stop`, `trades_by_audience` as the README defines them."""

    def shares(rows: list[dict]) -> dict:
        counts = Counter(t for r in rows for t in set(r.get("trades", [])))
        return {i: {"count": counts[i], "pct": pct(counts[i], len(rows))} for i in ids}

    by_stop, by_audience = defaultdict(list), {a: [] for a in AUDIENCES}
    for r in answers:
        by_stop[r.get("stop", CURRENT_STOP)].append(r)
        by_audience[r["audience"]].append(r)
    return {
        "trades": shares(answers),
        "trades_by_stop": {s: shares(rows) for s, rows in by_stop.items()},
        "trades_by_audience": {a: shares(rows) for a, rows in by_audience.items()},
    }


def from_database(path, ids: list[str]) -> dict:
    """The same figures recomputed from the stored rows."""
    db = sqlite3.connect(str(path))
    try:
        rows = db.execute("SELECT id, stop, audience FROM survey").fetchall()
        chosen = defaultdict(list)
        for survey_id, trade in db.execute("SELECT survey_id, trade FROM survey_trades"):
            chosen[survey_id].append(trade)
    finally:
        db.close()
    answers = [{"stop": stop, "audience": audience, "trades": chosen[i]} for i, stop, audience in rows]
    return expected(answers, ids)


def stats_part(stats: dict) -> dict:
    return {k: stats["survey"][k] for k in ("trades", "trades_by_stop", "trades_by_audience")}


async def test_trade_shares_are_exact_per_stop_and_audience_and_survive_a_restart(gateway_factory):
    gw = gateway_factory(name="trade-stats")
    api = Api(gw.http_url)
    _, catalogue = api.request("GET", "/api/trades")
    ids = [t["id"] for t in catalogue["trades"]]
    answers = make_answers(ids, 240)
    for answer in answers:
        status, body = api.request("POST", "/api/survey", answer)
        assert status == 201, (answer, body)
    # A trade outside the catalogue is refused with the reason, and changes nothing.
    status, body = api.request(
        "POST", "/api/survey", {"audience": "parent", "satisfaction": 4, "view_changed": True, "trades": ["astronaute"]}
    )
    assert status == 400 and body["kind"] == "unknown-trade" and "astronaute" in body["error"], body

    want = expected(answers, ids)
    got = stats_part(api.stats())
    assert got == want
    assert got == from_database(gw.data_dir / "visits.sqlite", ids)
    # The two new audiences are counted like the others.
    stats = api.stats()
    for audience in ("parent", "guidance_counsellor"):
        n = sum(1 for a in answers if a["audience"] == audience)
        assert stats["survey"]["by_audience"][audience]["responses"] == n > 0

    # OPC UA (and so MQTT and InfluxDB, which carry every tag): the count per trade.
    top = max(ids, key=lambda i: want["trades"][i]["count"])
    async with connect(gw) as opc:
        async def count_is():
            return await opc.read(f"Fabrique/Visits/Survey/Trades/{top}") == want["trades"][top]["count"]

        await wait_for(count_is, 15, what=f"Visits/Survey/Trades/{top}")
        assert await opc.read("Fabrique/Visits/Audiences/Parent/Visitors") == 0

    # After a restart, from the file alone.
    stop_gateway(gw)
    gw = gateway_factory(name="trade-stats")
    assert stats_part(Api(gw.http_url).stats()) == want


# ---------------------------------------------------------------------------------------------
# Over MQTT, and the counts in InfluxDB 1.6


@pytest.fixture
def broker(tmp_path):
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker")
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


@pytest.mark.skipif(MISSING is not None and os.environ.get("CI") != "true", reason=MISSING or "")
async def test_trades_answered_over_mqtt_are_counted_and_reach_influxdb(gateway_factory, broker, influxdb, tmp_path):
    gw = gateway_factory(name="trade-mqtt", args=gateway_args(tmp_path, broker, influxdb))
    api = Api(gw.http_url)
    _, catalogue = api.request("GET", "/api/trades")
    ids = [t["id"] for t in catalogue["trades"]]

    async def subscribed():
        return "mqtt subscriber connected" in gw.log_path.read_text(errors="replace")

    await wait_for(subscribed, 30, what="the MQTT subscriber to connect")
    answers = make_answers(ids, 60)
    topic = "fabrique/fabrique-hdf/survey/responses"
    for answer in answers:
        broker.publish(topic, json.dumps(answer))
    broker.publish(topic, json.dumps({"audience": "parent", "satisfaction": 4, "view_changed": True, "trades": ["astronaute"]}))

    await wait_for(lambda: api.stats()["survey"]["responses"] == len(answers), 60, what="the MQTT answers stored")
    await wait_for(lambda: api.stats()["survey"]["rejected"] == 1, 30, what="the unknown trade refused")
    want = expected(answers, ids)
    assert stats_part(api.stats()) == want

    top = max(ids, key=lambda i: want["trades"][i]["count"])

    def in_influx():
        r = influxdb.query(f"""SELECT last("value") FROM "fabrique" WHERE "tag" = 'Visits/Survey/Trades/{top}'""")
        series = r["results"][0].get("series", [])
        return bool(series) and series[0]["values"][0][1] == want["trades"][top]["count"]

    await wait_for(in_influx, 60, interval=0.5, what=f"Visits/Survey/Trades/{top} in InfluxDB")
