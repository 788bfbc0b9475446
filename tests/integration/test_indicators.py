"""Orders history and production indicators (issue 5): orders placed over OPC UA and HTTP at
high speed; the indicators read over OPC UA and /api/indicators agree exactly with a
recomputation from the stored history (orders.sqlite, read-only); a restart keeps both.

The recomputation follows the README, "Orders history and production indicators" step by step, including the order of the
floating-point operations, so equality is exact.
"""

from __future__ import annotations

import json
import math
import sqlite3
import urllib.error
import urllib.request
from datetime import datetime

from fabrique_testlib import connect, status_name, wait_for

from conftest import stop_gateway

SPEED = 200.0  # 20 simulated seconds per 100 ms tick: several steps can pass in one tick
IDEAL_CYCLE_TIME_S = 240.0
ORDERS_OPC = 12
ORDERS_HTTP = 12  # 24 in all: more than the 20 recent slots are queued at once
ENV = {
    "FABRIQUE__SIMULATION__SPEED": str(SPEED),
    "FABRIQUE__SIMULATION__DEFECT_RATE": "0.3",
    "FABRIQUE__SIMULATION__ORDERS_PER_HOUR": "0",
    "FABRIQUE__SIMULATION__SEED": "11",
    "FABRIQUE__STOP__TOWN": "Arras",
}
STEPS = 9
SCOPES = ("Total", "Stop", "Today")
SCOPE_FLOATS = (
    "ThroughputPerHour",
    "LeadTimeAvg",
    "LeadTimeP90",
    "ScrapRate",
    "PlannedTime",
    "RunningTime",
    "Availability",
    "Performance",
    "Quality",
    "OEE",
)
SCOPE_COUNTS = ("PartsDelivered", "PartsScrapped", "PartsChecked")


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def post_order(gw, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return http("POST", f"{gw.http_url}/api/orders", body)


# --- the recomputation, from the README, "Orders history and production indicators" -------------------------------------------------


def load_history(gw) -> tuple[list[dict], list[tuple[int, bool]]]:
    db = sqlite3.connect(f"file:{gw.data_dir / 'orders.sqlite'}?mode=ro", uri=True)
    try:
        orders = {}
        for row in db.execute(
            "SELECT row, id, model, text, stop, submitted_at, completed_at, state, verdict FROM orders"
        ):
            keys = ("row", "id", "model", "text", "stop", "submitted_at", "completed_at", "state", "verdict")
            orders[row[0]] = dict(zip(keys, row), steps={})
        for order_row, step, entered, left in db.execute(
            "SELECT order_row, step, entered_at, left_at FROM order_steps"
        ):
            orders[order_row]["steps"][step] = (entered, left)
        states = [(at, bool(running)) for at, running in db.execute(
            "SELECT at, running FROM line_states ORDER BY at, rowid"
        )]
    finally:
        db.close()
    return sorted(orders.values(), key=lambda o: o["row"]), states


def p90(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[max(1, -(-9 * len(ordered) // 10)) - 1]


def spread(values: list[int]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    return sum(values) / len(values) / 1e6, p90(values) / 1e6


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def running_time(states, start: int, end: int) -> int:
    total = 0
    for i, (at, running) in enumerate(states):
        if not running:
            continue
        until = states[i + 1][0] if i + 1 < len(states) else end
        lo, hi = max(at, start), min(until, end)
        if hi > lo:
            total += hi - lo
    return total


def recompute(orders: list[dict], states, ideal_cycle_us: float) -> dict:
    finished = [
        o for o in orders
        if o["state"] in ("Delivered", "Scrapped") and o["submitted_at"] is not None and o["completed_at"] is not None
    ]
    delivered = [o for o in finished if o["state"] == "Delivered"]
    checked = [o for o in finished if o["verdict"] is not None]
    good = sum(1 for o in checked if o["verdict"] == "OK")
    out = {
        "PartsDelivered": len(delivered),
        "PartsScrapped": len(finished) - len(delivered),
        "PartsChecked": len(checked),
    }
    out["LeadTimeAvg"], out["LeadTimeP90"] = spread([o["completed_at"] - o["submitted_at"] for o in delivered])
    for n in range(1, STEPS + 1):
        durations = [
            o["steps"][n][1] - o["steps"][n][0]
            for o in finished
            if n in o["steps"] and o["steps"][n][1] is not None
        ]
        out[f"Steps/Step{n}/CycleTimeAvg"], out[f"Steps/Step{n}/CycleTimeP90"] = spread(durations)
    if not finished:
        return out | {k: 0.0 for k in SCOPE_FLOATS if k not in out}
    start = min(o["submitted_at"] for o in finished)
    end = max(o["completed_at"] for o in finished)
    planned = end - start
    running = running_time(states, start, end)
    parts = len(finished)
    availability = ratio(float(running), float(planned))
    performance = ratio(ideal_cycle_us * float(parts), float(running))
    quality = ratio(float(good), float(len(checked)))
    out["PlannedTime"] = planned / 1e6
    out["RunningTime"] = running / 1e6
    out["ThroughputPerHour"] = ratio(float(len(delivered)) * 3.6e9, float(planned))
    out["ScrapRate"] = 100.0 * ratio(float(len(checked) - good), float(len(checked)))
    out["Availability"] = 100.0 * availability
    out["Performance"] = 100.0 * performance
    out["Quality"] = 100.0 * quality
    out["OEE"] = 100.0 * (availability * performance * quality)
    return out


def local_day(us: int) -> str:
    return datetime.fromtimestamp(us // 1_000_000).date().isoformat()


def scope_names() -> list[str]:
    names = list(SCOPE_COUNTS) + list(SCOPE_FLOATS)
    for n in range(1, STEPS + 1):
        names += [f"Steps/Step{n}/CycleTimeAvg", f"Steps/Step{n}/CycleTimeP90"]
    return names


async def read_indicators(opc) -> dict[str, object]:
    paths = [f"{scope}/{name}" for scope in SCOPES for name in scope_names()]
    paths += ["Stop/Town", "Today/Day", "OrdersRecorded", "IdealCycleTime"]
    paths += [f"InProgress/Step{n}" for n in range(1, STEPS + 1)] + ["InProgress/Total"]
    values = await opc.read_many([f"Fabrique/Indicators/{p}" for p in paths])
    bad = [f"{p}: {status_name(v.StatusCode)}" for p, v in zip(paths, values) if not v.StatusCode.is_good()]
    assert not bad, bad
    return {p: v.Value.Value for p, v in zip(paths, values)}


def expected_indicators(gw, read: dict[str, object]) -> dict[str, object]:
    orders, states = load_history(gw)
    ideal_cycle_us = IDEAL_CYCLE_TIME_S * 1e6 / SPEED
    scoped = {
        "Total": orders,
        "Stop": [o for o in orders if o["stop"] == read["Stop/Town"]],
        "Today": [o for o in orders if o["completed_at"] is not None and local_day(o["completed_at"]) == read["Today/Day"]],
    }
    expected = {}
    for scope, subset in scoped.items():
        for name, value in recompute(subset, states, ideal_cycle_us).items():
            expected[f"{scope}/{name}"] = value
    expected["OrdersRecorded"] = len(orders)
    return expected


def assert_agree(read: dict, expected: dict) -> None:
    differ = {k: (read[k], v) for k, v in expected.items() if read[k] != v}
    assert not differ, f"indicators (read, recomputed) that differ: {differ}"


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{path}/")
        else:
            out[path] = value
    return out


# --- the test -------------------------------------------------------------------------------------


async def test_indicators_agree_with_the_stored_history_and_survive_a_restart(gateway_factory):
    gw = gateway_factory(ENV, name="indicators")
    async with connect(gw) as opc:
        assert await opc.read("Fabrique/Indicators/Stop/Town") == "Arras"

        # Bad orders over HTTP: 400 with a reason, and nothing is created.
        submitted_before = await opc.read("Fabrique/Orders/Submitted")
        bad_orders = [
            {"model": "Rocket", "text": "x"},
            {"model": "Wave", "text": "   "},
            {"model": "Wave", "text": "x" * 21},
            {"model": "Wave", "text": "a\u0007b"},
            {"model": "Wave"},
            {"model": "Wave", "text": 3},
            b"{not json",
        ]
        for payload in bad_orders:
            status, answer = post_order(gw, payload)
            assert status == 400, (payload, status, answer)
            assert answer.get("error"), (payload, answer)
        assert await opc.read("Fabrique/Orders/Submitted") == submitted_before

        ids = []
        models = ["Classic", "Wave", "Hexa", "Minimal"]
        for i in range(ORDERS_OPC):
            result = await opc.submit_order(models[i % 4], f"Opc {i}")
            assert result.StatusCode.is_good(), status_name(result.StatusCode)
            ids.append(result.OutputArguments[0].Value)
        for i in range(ORDERS_HTTP):
            status, answer = post_order(gw, {"model": models[i % 4], "text": f"Léa {i}"})
            assert status == 201, answer
            ids.append(answer["id"])
        assert len(set(ids)) == ORDERS_OPC + ORDERS_HTTP

        async def all_finished():
            done = await opc.read_many([f"Fabrique/Indicators/Total/{n}" for n in ("PartsDelivered", "PartsScrapped")])
            return sum(v.Value.Value for v in done) == len(ids)

        await wait_for(all_finished, 180, interval=0.5, what="every order delivered or scrapped")
        read = await read_indicators(opc)

        # Exactly what the stored history gives.
        expected = expected_indicators(gw, read)
        assert_agree(read, expected)
        assert read["Total/PartsDelivered"] > 0 and read["Total/PartsScrapped"] > 0, read
        assert read["Stop/PartsDelivered"] == read["Total/PartsDelivered"]
        assert read["InProgress/Total"] == 0
        assert read["IdealCycleTime"] == IDEAL_CYCLE_TIME_S / SPEED

        # /api/indicators shows the same values.
        status, tree = http("GET", f"{gw.http_url}/api/indicators")
        assert status == 200
        api = flatten(tree)
        differ = {k: (v, api.get(k)) for k, v in read.items() if api.get(k) != v}
        assert not differ, differ

        # Every order was recorded with its model, text, stop and each step it went through.
        orders, _ = load_history(gw)
        by_id = {o["id"]: o for o in orders}
        assert set(by_id) == set(ids)
        for i, order_id in enumerate(ids):
            o = by_id[order_id]
            assert o["model"] == models[i % ORDERS_OPC % 4], o
            assert o["text"] == (f"Opc {i}" if i < ORDERS_OPC else f"Léa {i - ORDERS_OPC}"), o
            assert o["stop"] == "Arras"
            last = 9 if o["state"] == "Delivered" else 8
            assert o["verdict"] == ("OK" if last == 9 else "NOK"), o
            assert sorted(o["steps"]) == list(range(1, last + 1)), o
            for n in range(1, last + 1):
                entered, left = o["steps"][n]
                assert left is not None and o["submitted_at"] <= entered <= left, (n, o)
                if n < last:
                    assert o["steps"][n + 1][0] == left, (n, o)
            assert o["steps"][last][1] == o["completed_at"], o

        # GET /api/orders/<id>: the recorded order with its step times.
        http_id = ids[-1]
        status, answer = http("GET", f"{gw.http_url}/api/orders/{http_id}")
        assert status == 200, answer
        assert answer["id"] == http_id and answer["model"] == by_id[http_id]["model"]
        assert answer["state"] == by_id[http_id]["state"]
        assert [s["step"] for s in answer["steps"]] == sorted(by_id[http_id]["steps"])
        for s in answer["steps"]:
            entered, left = by_id[http_id]["steps"][s["step"]]
            assert math.isclose(s["duration_s"], (left - entered) / 1e6)
        status, answer = http("GET", f"{gw.http_url}/api/orders/ORD-999999")
        assert status == 404 and answer.get("error")

    # A restart under the same name finds the same data directory: the same figures.
    stop_gateway(gw)
    gw2 = gateway_factory(ENV, name="indicators")
    assert gw2.data_dir == gw.data_dir
    async with connect(gw2) as opc:
        async def history_loaded():
            # The engine publishes once it knows the line's mode (its figures depend on it).
            value = (await opc.read_many(["Fabrique/Indicators/OrdersRecorded"]))[0]
            return value.StatusCode.is_good() and value.Value.Value

        await wait_for(history_loaded, 20, what="the history loaded")
        after = await read_indicators(opc)
        assert after["OrdersRecorded"] == len(ids)
        same = [f"{scope}/{name}" for scope in SCOPES for name in scope_names()]
        differ = {k: (read[k], after[k]) for k in same if read[k] != after[k]}
        assert not differ, f"figures changed over the restart (before, after): {differ}"
        assert_agree(after, expected_indicators(gw2, after))
        status, answer = http("GET", f"{gw2.http_url}/api/orders/{ids[0]}")
        assert status == 200 and answer["id"] == ids[0]
