"""The visitor's journey over HTTP and OPC UA (asyncua): designs and their QR codes, class uploads,
kiosk scans (launch, double scan, unknown, expired, line stopped: each refused as specified and
launching nothing), following an order over Server-Sent Events until delivery, FindOrder, the
trades catalogue in the API and the address space, and a class of 24 launched one after another.
"""

from __future__ import annotations

import json

from asyncua import ua

from fabrique_testlib import connect, status_name, wait_for
from peer_journey import create_design, follow_until, scan, sse_events
from peer_survey import Api

KIOSK = "Fabrique/Stations/Reception/Kiosk"


def headers(api) -> dict:
    return {k.lower(): v for k, v in api.last_headers.items()}


async def kiosk_counters(opc) -> dict:
    names = ["Scans", "Launched", "Rejected", "LastResult"]
    values = await opc.read_many([f"{KIOSK}/{n}" for n in names])
    return {n: v.Value.Value for n, v in zip(names, values)}


async def submitted(opc) -> int:
    return await opc.read("Fabrique/Orders/Submitted")


def test_a_design_gets_a_code_a_qr_code_and_is_refused_like_an_order(gateway):
    api = Api(gateway.http_url)
    design = create_design(api, "Hexa", "  Noé  ")
    assert design["text"] == "Noé" and design["state"] == "ready" and design["order"] is None
    status, body = api.request("GET", f"/api/designs/{design['code'].lower()}")
    assert status == 200 and body["code"] == design["code"] and body["model"] == "Hexa", body
    status, svg = api.request("GET", design["qr"])
    assert status == 200 and "<svg" in svg and headers(api)["content-type"] == "image/svg+xml"
    # The order rules of the line, with the line's own reasons.
    for bad, words in [
        ({"model": "Rocket", "text": "x"}, "unknown model"),
        ({"model": "Wave", "text": "   "}, "blank"),
        ({"model": "Wave", "text": "x" * 21}, "at most 20"),
    ]:
        status, body = api.request("POST", "/api/designs", bad)
        assert status == 400 and body["kind"] == "bad-design" and words in body["error"], body
    status, body = api.request("POST", "/api/designs", {"model": "Wave", "text": "x", "colour": "red"})
    assert status == 400 and "colour" in body["error"], body
    status, body = api.request("GET", "/api/designs/ZZZZZZ")
    assert status == 404 and body["kind"] == "unknown-code", body


def test_a_class_uploads_its_designs_and_prints_its_qr_sheet(gateway):
    api = Api(gateway.http_url)
    csv = "élève;modèle;texte\nLéa;Wave;Léa\n\"Noé, D.\";Hexa;Noé\nTom;Classic;Go Tom\n"
    api_csv = Api(gateway.http_url)
    conn = api_csv._connection()
    conn.request("POST", "/api/groups?name=4e%20B", body=csv.encode(), headers={"Content-Type": "text/csv"})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == 201, body
    assert body["name"] == "4e B" and [d["pupil"] for d in body["designs"]] == ["Léa", "Noé, D.", "Tom"]
    status, group = api.request("GET", f"/api/groups/{body['group']}")
    assert status == 200 and [d["code"] for d in group["designs"]] == [d["code"] for d in body["designs"]]
    status, sheet = api.request("GET", body["qr_sheet"])
    assert status == 200 and sheet.count("<svg") == 3 and "4e B" in sheet and "Noé, D." in sheet
    # JSON works too; one bad design refuses the whole class, naming the pupil.
    status, body = api.request("POST", "/api/groups", {
        "name": "3e A",
        "designs": [{"pupil": "Ana", "model": "Wave", "text": "Ana"}, {"pupil": "Bob", "model": "Rocket", "text": "Bob"}],
    })
    assert status == 400 and "designs[1] (Bob)" in body["error"], body


async def test_scans_launch_once_and_every_refusal_is_precise(gateway):
    api = Api(gateway.http_url)
    async with connect(gateway) as opc:
        design = create_design(api, "Minimal", "Kiosque")
        before = await kiosk_counters(opc)
        orders_before = await submitted(opc)
        status, body = scan(api, design["code"])
        assert status == 201 and body["order"].startswith("ORD-"), body
        order = body["order"]
        assert body["follow"] == f"/suivi/{order}"
        await wait_for(lambda: submitted_is(opc, orders_before + 1), 10, what="one order placed")

        # Scanned twice: refused, with the order it launched; nothing launched.
        status, body = scan(api, design["code"].lower())
        assert status == 409 and body["kind"] == "already-launched", body
        assert order in body["error"] and body["status"] == "BadAlreadyExists"
        # Unknown and malformed codes.
        status, body = scan(api, "ZZZZZZ")
        assert status == 404 and body["kind"] == "unknown-code" and "inconnu" in body["error"], body
        status, body = scan(api, "O0I1L")
        assert status == 400 and body["kind"] == "invalid-code", body
        # Over OPC UA: the same outcomes as status codes.
        result = await opc.call(KIOSK, "Scan", ua.Variant(design["code"], ua.VariantType.String))
        assert status_name(result.StatusCode) == "BadAlreadyExists", status_name(result.StatusCode)
        result = await opc.call(KIOSK, "Scan", ua.Variant("ZZZZZZ", ua.VariantType.String))
        assert status_name(result.StatusCode) == "BadNotFound"
        second = create_design(api, "Wave", "OPC UA")
        result = await opc.call(KIOSK, "Scan", ua.Variant(second["code"], ua.VariantType.String))
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        ua_order = result.OutputArguments[0].Value
        assert ua_order.startswith("ORD-") and ua_order != order
        status, body = api.request("GET", f"/api/designs/{second['code']}")
        assert body["state"] == "launched" and body["order"] == ua_order, body

        await wait_for(lambda: submitted_is(opc, orders_before + 2), 10, what="exactly two orders")
        expected = {
            "Scans": before["Scans"] + 7,
            "Launched": before["Launched"] + 2,
            "Rejected": before["Rejected"] + 5,
        }

        last = {}

        async def counters_are():
            last.update(await kiosk_counters(opc))
            return all(last[k] == v for k, v in expected.items())

        await wait_for(counters_are, 10, what=lambda: f"kiosk counters {expected}, last read {last}")
        assert (await kiosk_counters(opc))["LastResult"] == ua_order

        # FindOrder finds any order by id.
        result = await opc.call("Fabrique/Orders", "FindOrder", ua.Variant(order, ua.VariantType.String))
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        model, text, state, _step, code = [v.Value for v in result.OutputArguments]
        assert (model, text, code) == ("Minimal", "Kiosque", design["code"])
        assert state in {"Queued", "InProgress", "Delivered"}
        result = await opc.call("Fabrique/Orders", "FindOrder", ua.Variant("ORD-999999", ua.VariantType.String))
        assert status_name(result.StatusCode) == "BadNotFound"


async def submitted_is(opc, n: int) -> bool:
    return await submitted(opc) == n


async def test_expired_codes_and_a_stopped_line_launch_nothing(gateway_factory):
    # Designs live 0.00005 days (4.3 s) on this gateway.
    gw = gateway_factory(env={"FABRIQUE__JOURNEY__DESIGN_EXPIRY_DAYS": "0.00005"}, name="journey-expiry")
    api = Api(gw.http_url)
    async with connect(gw) as opc:
        old = create_design(api, "Wave", "Trop tard")

        def expired():
            return api.request("GET", f"/api/designs/{old['code']}")[1]["state"] == "expired"

        await wait_for(expired, 20, what="the design to expire")
        orders = await submitted(opc)
        status, body = scan(api, old["code"])
        assert status == 410 and body["kind"] == "expired" and "expiré" in body["error"], body
        result = await opc.call(KIOSK, "Scan", ua.Variant(old["code"], ua.VariantType.String))
        assert status_name(result.StatusCode) == "BadRequestNotAllowed"
        assert await submitted(opc) == orders

    gw = gateway_factory(name="journey-stopped")
    api = Api(gw.http_url)
    async with connect(gw) as opc:
        design = create_design(api, "Classic", "Arrêt")
        assert (await opc.call("Fabrique/Line", "Stop")).StatusCode.is_good()
        await wait_for(lambda: line_state_is(opc, "Stopped"), 10, what="the line stopped")
        orders = await submitted(opc)
        status, body = scan(api, design["code"])
        assert status == 503 and body["kind"] == "line-stopped" and "arrêt" in body["error"], body
        assert headers(api).get("retry-after") == "30"
        result = await opc.call(KIOSK, "Scan", ua.Variant(design["code"], ua.VariantType.String))
        assert status_name(result.StatusCode) == "BadInvalidState"
        assert await submitted(opc) == orders
        status, body = api.request("GET", f"/api/designs/{design['code']}")
        assert body["state"] == "ready", "a refused scan keeps the code valid"
        # Once the line runs again, the same code launches.
        assert (await opc.call("Fabrique/Line", "Start")).StatusCode.is_good()
        await wait_for(lambda: line_state_is(opc, "Running"), 10, what="the line running")
        status, body = scan(api, design["code"])
        assert status == 201, body


async def line_state_is(opc, state: str) -> bool:
    return await opc.read("Fabrique/Line/State") == state


def test_an_order_is_followed_live_until_delivered_with_its_trades(gateway):
    api = Api(gateway.http_url)
    status, catalogue = api.request("GET", "/api/trades")
    assert status == 200 and len(catalogue["trades"]) >= 40
    by_step = {n: [t["id"] for t in catalogue["trades"] if n in t["steps"]] for n in range(1, 10)}
    design = create_design(api, "Wave", "Suivi")
    status, body = scan(api, design["code"])
    assert status == 201, body
    order = body["order"]
    views = follow_until(gateway.http_url, order, {"Delivered"})
    first, last = views[0], views[-1]
    assert first["id"] == order and first["model"] == "Wave" and first["text"] == "Suivi"
    assert first["design"] == design["code"]
    assert last["state"] == "Delivered" and last["current_step"] is None
    seen_steps = {v["current_step"] for v in views if v["current_step"]}
    assert len(seen_steps) >= 3, f"the stream showed the order moving: {seen_steps}"
    for step in last["steps"]:
        assert step["status"] == "done" and step["duration_s"] > 0, step
        assert step["trades"] == by_step[step["number"]] and step["trades"], step
    # Live values of the machine at the current step, while it works there.
    printing = [v for v in views if v["current_step"] == 4]
    if printing:
        live = {l["name"] for l in next(s for s in printing[-1]["steps"] if s["number"] == 4)["live"]}
        assert {"NozzleTemperature", "JobProgress"} <= live
    # A phone waking up: a new connection gets the current view at once.
    event, view = next(sse_events(gateway.http_url, f"/api/follow/{order}/events", 10))
    assert event == "order" and view["state"] == "Delivered"
    # Unknown orders.
    status, body = api.request("GET", "/api/follow/ORD-999999")
    assert status == 404, body
    event, _ = next(sse_events(gateway.http_url, "/api/follow/ORD-999999/events", 10))
    assert event == "unknown"


async def test_each_step_shows_its_trades_in_the_address_space(opc):
    api = Api(opc.gateway.http_url)
    _, catalogue = api.request("GET", "/api/trades")
    for n in range(1, 10):
        names = await opc.read(f"Fabrique/Line/Steps/Step{n}/Trades")
        assert names == [t["name"] for t in catalogue["trades"] if n in t["steps"]], n
        assert names, f"step {n} has trades"
    off_line = [t for t in catalogue["trades"] if not t["steps"]]
    assert {t["stage"] for t in off_line} >= {"marketing", "recyclage", "vente"}


def test_a_class_of_24_launched_one_after_another_all_reach_delivery(gateway_factory):
    gw = gateway_factory(env={"FABRIQUE__SIMULATION__SPEED": "200"}, name="journey-class")
    api = Api(gw.http_url)
    pupils = [{"pupil": f"Élève {i + 1}", "model": ["Classic", "Wave", "Hexa", "Minimal"][i % 4],
               "text": f"Classe {i + 1}"} for i in range(24)]
    status, group = api.request("POST", "/api/groups", {"name": "5e C", "designs": pupils})
    assert status == 201, group
    orders = []
    for design in group["designs"]:
        status, body = scan(api, design["code"])
        assert status == 201, body
        orders.append(body["order"])
    assert len(set(orders)) == 24
    # The big screen's stream, until every order of the class is among the finished ones.
    wanted = set(orders)
    for event, view in sse_events(gw.http_url, "/api/line/events", timeout=300):
        assert event == "line"
        finished = {o["id"]: o for o in view["finished"]}
        if wanted <= finished.keys():
            assert all(finished[o]["state"] == "Delivered" for o in orders)
            break
    else:
        raise AssertionError("the class did not reach delivery")
    status, body = api.request("GET", f"/api/groups/{group['group']}")
    assert [d["order"] for d in body["designs"]] == orders
    assert all(d["state"] == "launched" for d in body["designs"])


async def test_designs_made_and_refused_are_counted(opc):
    api = Api(opc.gateway.http_url)
    paths = [f"{KIOSK}/DesignsCreated", f"{KIOSK}/DesignsRefused"]

    async def read() -> list[int]:
        return [v.Value.Value for v in await opc.read_many(paths)]

    created, refused = await read()
    create_design(api, "Wave", "Compté")
    assert api.request("POST", "/api/designs", {"model": "Rocket", "text": "x"})[0] == 400
    assert api.request("POST", "/api/designs", "{")[0] == 400

    async def counted():
        return await read() == [created + 1, refused + 2]

    await wait_for(counted, 10, what="DesignsCreated + 1 and DesignsRefused + 2")
