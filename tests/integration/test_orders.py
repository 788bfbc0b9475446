"""The SubmitOrder method, input validation, an order's way along the 9 steps, Start/Stop."""

from __future__ import annotations

import re

from asyncua import ua

from fabrique_testlib import (
    RECENT_SLOTS,
    STRING,
    Recorder,
    browse_children,
    connect,
    is_set_datetime,
    same_node,
    slot_of_order,
    slot_path,
    status_name,
    wait_for,
)

ORDER_ID = re.compile(r"^ORD-\d{6}$")


async def _arguments(opc, method_path: str, name: str):
    refs = await browse_children(opc.client, opc.nodeid(method_path))
    matches = [r for r in refs if r.BrowseName.Name == name]
    assert len(matches) == 1, f"{method_path} has no {name}: {[r.BrowseName.to_string() for r in refs]}"
    node = opc.client.get_node(ua.NodeId(matches[0].NodeId.Identifier, matches[0].NodeId.NamespaceIndex))
    return await node.read_value()


async def test_submit_order_signature(opc):
    inputs = await _arguments(opc, "Fabrique/Line/SubmitOrder", "InputArguments")
    assert [a.Name for a in inputs] == ["Model", "Text"]
    for arg in inputs:
        assert same_node(arg.DataType, ua.NodeId(STRING, 0)), f"{arg.Name}: {arg.DataType}"
        assert arg.ValueRank == -1, arg.Name
    outputs = await _arguments(opc, "Fabrique/Line/SubmitOrder", "OutputArguments")
    assert [a.Name for a in outputs] == ["OrderId"]
    assert same_node(outputs[0].DataType, ua.NodeId(STRING, 0))


async def test_order_flows_through_all_steps(opc):
    recorder = Recorder(opc)
    step_orders = [f"Fabrique/Line/Steps/Step{k}/CurrentOrder" for k in range(1, 10)]
    slot_vars = [f"{slot_path(n)}/{v}" for n in range(1, RECENT_SLOTS + 1) for v in ("Step", "State")]
    watched = step_orders + slot_vars
    sub = await opc.client.create_subscription(100, recorder)
    try:
        handles = await sub.subscribe_data_change(
            [opc.node(p) for p in watched], queuesize=20, sampling_interval=0
        )
        refused = [p for p, h in zip(watched, handles) if not isinstance(h, int)]
        assert not refused, f"monitored items refused: {refused}"
        # Every monitored item first reports its current value; only changes after `mark` count.
        await wait_for(
            lambda: {p for p, _, _ in recorder.events} >= set(watched),
            10,
            what="the initial value of every monitored item",
        )
        mark = recorder.mark()

        delivered_before = await opc.read("Fabrique/Line/PartsDelivered")
        submitted_before = await opc.read("Fabrique/Orders/Submitted")
        result = await opc.submit_order("Wave", "Léa")
        assert result.StatusCode.is_good(), f"SubmitOrder: {status_name(result.StatusCode)}"
        assert len(result.OutputArguments) == 1
        order_id = result.OutputArguments[0].Value
        assert result.OutputArguments[0].VariantType == ua.VariantType.String
        assert ORDER_ID.match(order_id), order_id

        slot = slot_path(slot_of_order(order_id))

        async def slot_holds_order():
            return await opc.read(f"{slot}/Id") == order_id

        await wait_for(slot_holds_order, 5, what=f"{slot}/Id to become {order_id}")
        assert await opc.read(f"{slot}/Model") == "Wave"
        assert await opc.read(f"{slot}/Text") == "Léa"
        submitted_at = await opc.read(f"{slot}/SubmittedAt")
        assert is_set_datetime(submitted_at), submitted_at

        async def counted():
            return (
                await opc.read("Fabrique/Orders/Submitted") >= submitted_before + 1
                and await opc.read("Fabrique/Orders/LastOrderId") == order_id
            )

        await wait_for(counted, 5, what="Orders/Submitted and Orders/LastOrderId to count the order")

        async def finished():
            state = await opc.read(f"{slot}/State")
            return state if state in ("Delivered", "Scrapped") else None

        await wait_for(finished, 60, interval=0.25, what=f"{order_id} to be delivered")
        assert await opc.read(f"{slot}/State") == "Delivered"
        assert await opc.read(f"{slot}/Verdict") == "OK"
        completed_at = await opc.read(f"{slot}/CompletedAt")
        assert is_set_datetime(completed_at), completed_at
        assert completed_at >= submitted_at
        assert await opc.read("Fabrique/Line/PartsDelivered") >= delivered_before + 1

        # The subscription saw the whole route.
        await wait_for(
            lambda: "Delivered" in recorder.values(f"{slot}/State", mark),
            5,
            what="the Delivered notification",
        )
        states = recorder.values(f"{slot}/State", mark)
        assert set(states) <= {"Queued", "InProgress", "Delivered"}, states
        assert states[-1] == "Delivered", states
        steps = recorder.values(f"{slot}/Step", mark)
        assert all(isinstance(s, int) and 0 <= s <= 9 for s in steps), steps
        assert steps == sorted(steps), f"Step went backwards: {steps}"
        assert set(range(1, 10)) <= set(steps), f"Step did not pass through 1..9: {steps}"
        for k, path in enumerate(step_orders, start=1):
            seen = recorder.values(path, mark)
            assert order_id in seen, f"Step{k}/CurrentOrder never showed {order_id}: {seen}"
    finally:
        await sub.delete()


async def test_invalid_orders_are_refused(opc):
    submitted_before = await opc.read("Fabrique/Orders/Submitted")
    last_before = await opc.read("Fabrique/Orders/LastOrderId")
    bad_inputs = [
        ("Rocket", "Léa"),  # unknown model
        ("Wave", ""),  # empty text
        ("Wave", "   "),  # only whitespace
        ("Wave", "x" * 21),  # one character too long (default max 20)
        ("Wave", "é" * 21),  # too long in characters, whatever the bytes
    ]
    problems = []
    for model, text in bad_inputs:
        result = await opc.submit_order(model, text)
        if result.StatusCode.value != ua.StatusCodes.BadInvalidArgument:
            problems.append(
                f"SubmitOrder({model!r}, {text!r}): {status_name(result.StatusCode)}, "
                f"outputs {[v.Value for v in result.OutputArguments or []]}"
            )
    assert not problems, "\n".join(problems)
    assert await opc.read("Fabrique/Orders/LastOrderId") == last_before

    # 20 characters (with accents: 20 characters, more bytes) is the longest accepted text.
    longest = "Élodie & Zoé, août!!"
    assert len(longest) == 20
    result = await opc.submit_order("Minimal", longest)
    assert result.StatusCode.is_good(), f"SubmitOrder with 20 characters: {status_name(result.StatusCode)}"
    order_id = result.OutputArguments[0].Value
    assert ORDER_ID.match(order_id)

    # Once the valid order is counted, exactly one order was added: none of the refused ones.
    async def counted():
        return await opc.read("Fabrique/Orders/LastOrderId") == order_id

    await wait_for(counted, 5, what=f"Orders/LastOrderId to become {order_id}")
    assert await opc.read("Fabrique/Orders/Submitted") == submitted_before + 1
    assert await opc.read(f"{slot_path(slot_of_order(order_id))}/Text") == longest


async def test_order_ids_are_sequential(opc):
    first = await opc.submit_order("Hexa", "A")
    second = await opc.submit_order("Classic", "B")
    assert first.StatusCode.is_good() and second.StatusCode.is_good()
    a, b = first.OutputArguments[0].Value, second.OutputArguments[0].Value
    assert ORDER_ID.match(a) and ORDER_ID.match(b)
    assert int(b[4:]) == int(a[4:]) + 1
    for order_id, model, text in ((a, "Hexa", "A"), (b, "Classic", "B")):
        slot = slot_path(slot_of_order(order_id))

        async def holds():
            return await opc.read(f"{slot}/Id") == order_id

        await wait_for(holds, 5, what=f"{slot} to hold {order_id}")
        assert await opc.read(f"{slot}/Model") == model
        assert await opc.read(f"{slot}/Text") == text
        assert await opc.read(f"{slot}/State") in ("Queued", "InProgress", "Delivered")


async def test_stop_and_start_the_line(gateway_factory):
    """On a private gateway, so that the shared line keeps running."""
    gw = gateway_factory(name="start-stop")
    async with connect(gw) as opc:
        assert await opc.read("Fabrique/Line/State") == "Running"
        result = await opc.call("Fabrique/Line", "Stop")
        assert result.StatusCode.is_good(), f"Stop(): {status_name(result.StatusCode)}"

        async def state_is(expected):
            return await opc.read("Fabrique/Line/State") == expected

        await wait_for(lambda: state_is("Stopped"), 5, what="Line/State Stopped")
        result = await opc.call("Fabrique/Line", "Start")
        assert result.StatusCode.is_good(), f"Start(): {status_name(result.StatusCode)}"
        await wait_for(lambda: state_is("Running"), 5, what="Line/State Running")


async def test_line_settings_from_a_config_file(gateway_factory, tmp_path):
    """`fabrique-gateway --config FILE` (no subcommand: `run` is the default) applies [line]."""
    config = tmp_path / "line.toml"
    config.write_text(
        '[line]\nmodels = ["Classic", "Rocket"]\nmax_text_length = 5\nrecent_orders = 5\n',
        encoding="utf-8",
    )
    gw = gateway_factory(name="line-config", args=["--config", str(config)])
    async with connect(gw) as opc:
        assert await opc.read("Fabrique/Line/Models") == ["Classic", "Rocket"]
        recent = await browse_children(opc.client, opc.nodeid("Fabrique/Orders/Recent"))
        assert sorted(r.BrowseName.Name for r in recent) == [f"Order{n:02d}" for n in range(1, 6)]

        for model, text in (("Wave", "abc"), ("Classic", "abcdef")):
            result = await opc.submit_order(model, text)
            assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument, (
                f"SubmitOrder({model!r}, {text!r}): {status_name(result.StatusCode)}"
            )
        result = await opc.submit_order("Rocket", "abcde")
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        order_id = result.OutputArguments[0].Value
        assert order_id == "ORD-000001", "first order of a fresh gateway"
        slot = slot_path(slot_of_order(order_id, slots=5))

        async def holds():
            return await opc.read(f"{slot}/Id") == order_id

        await wait_for(holds, 5, what=f"{slot} to hold {order_id}")
        assert await opc.read(f"{slot}/Model") == "Rocket"
        assert await opc.read(f"{slot}/Text") == "abcde"


async def test_recent_slots_wrap_around(gateway_factory):
    """Order n lives in slot ((n-1) mod 20)+1: the 21st order takes Order01 over."""
    gw = gateway_factory(name="wrap-around")
    async with connect(gw) as opc:
        ids = []
        for n in range(1, 22):
            result = await opc.submit_order("Classic", f"n{n}")
            assert result.StatusCode.is_good(), f"order {n}: {status_name(result.StatusCode)}"
            ids.append(result.OutputArguments[0].Value)
        assert ids == [f"ORD-{n:06d}" for n in range(1, 22)]

        async def all_counted():
            return (
                await opc.read("Fabrique/Orders/Submitted") == 21
                and await opc.read("Fabrique/Orders/LastOrderId") == "ORD-000021"
                and await opc.read(f"{slot_path(1)}/Id") == "ORD-000021"
            )

        await wait_for(all_counted, 5, what="21 orders counted and ORD-000021 in Order01")
        assert await opc.read(f"{slot_path(1)}/Text") == "n21"
        for n in range(2, 21):
            assert await opc.read(f"{slot_path(n)}/Id") == f"ORD-{n:06d}"
            assert await opc.read(f"{slot_path(n)}/Text") == f"n{n}"
