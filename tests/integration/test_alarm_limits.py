"""Limit alarms (ExclusiveLimitAlarmType), Confirm and ConditionRefresh against a real
pymodbus peer: its holding register drives a tag with `alarm = { ... }` limits through High,
HighHigh and back; an operator acknowledges and confirms; ConditionRefresh(2) replays the
retained conditions to one subscription; the acknowledged state survives a kill -9.
"""

from __future__ import annotations

import pytest
from asyncua import ua
from asyncua.common.events import select_clauses_from_evtype

from fabrique_testlib import connect, wait_for
from peer_modbus import PRESS_DEVICE, PeerProcess, encode, free_port
from test_alarms import condition_id_through_base_event_type
from test_events import Collector

LIMITED_CONFIG = PRESS_DEVICE + """
  [[devices.tags]]
  name = "OilTemperature"
  register = "holding:10"
  type = "int16"
  unit = "°C"
  alarm = {{ high = 230.0, high_high = 240.0, deadband = 1.0, severity = 800, message = "Press oil overheating" }}
"""

TAG = "Fabrique/Stations/Partners/press/OilTemperature"
ACKNOWLEDGE = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
CONFIRM = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm)
REFRESH = ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh)
REFRESH2 = ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh2)
LIMIT_ALARM = ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType)
REFRESH_START = ua.NodeId(ua.ObjectIds.RefreshStartEventType)
REFRESH_END = ua.NodeId(ua.ObjectIds.RefreshEndEventType)


@pytest.fixture
def press_peer(tmp_path):
    peer = PeerProcess(tmp_path / "peer.log", port=free_port())
    peer.start()
    peer.set(1, 16, 10, encode("int16", 200))
    yield peer
    peer.kill()


def of_types(*types: ua.NodeId) -> ua.ContentFilter:
    """OfType(a) Or OfType(b) Or ...: limit alarms and the refresh markers."""
    elements = []
    for i, type_id in enumerate(types):
        last = i == len(types) - 1
        of_type = ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.OfType,
            FilterOperands=[ua.LiteralOperand(Value=ua.Variant(type_id))],
        )
        if last:
            elements.append(of_type)
        else:
            # [Or(next, the rest), OfType(type), ...]: element k+1 is this OfType.
            here = len(elements)
            elements.append(
                ua.ContentFilterElement(
                    FilterOperator=ua.FilterOperator.Or,
                    FilterOperands=[ua.ElementOperand(Index=here + 1), ua.ElementOperand(Index=here + 2)],
                )
            )
            elements.append(of_type)
    return ua.ContentFilter(Elements=elements)


async def subscribe_limits(opc, collector: Collector, notifier: str = "Fabrique/Stations/Partners"):
    sub = await opc.client.create_subscription(50, collector)
    limit_type = opc.client.get_node(LIMIT_ALARM)
    evfilter = ua.EventFilter()
    evfilter.SelectClauses = condition_id_through_base_event_type(await select_clauses_from_evtype([limit_type]))
    evfilter.WhereClause = of_types(LIMIT_ALARM, REFRESH_START, REFRESH_END)
    handle = await sub.subscribe_alarms_and_conditions(opc.node(notifier), limit_type, evfilter, queuesize=100)
    return sub, handle


def fields(event) -> dict:
    return {k: v.Value for k, v in event.get_event_props_as_fields_dict().items()}


async def refused(call, code):
    with pytest.raises(ua.UaStatusCodeError) as error:
        await call
    assert error.value.code == code, ua.StatusCode(error.value.code)


async def test_a_limit_alarm_goes_high_then_high_high_then_back_and_is_confirmed(gateway_factory, tmp_path, press_peer):
    config = tmp_path / "press.toml"
    config.write_text(LIMITED_CONFIG.format(port=press_peer.port))
    gw = gateway_factory(name="limits", args=["--config", str(config)])
    async with connect(gw) as opc:
        await wait_for(lambda: opc.node(TAG).read_value(), 30, what="oil temperature read")
        alarms = Collector()
        sub, handle = await subscribe_limits(opc, alarms)

        press_peer.set(1, 16, 10, encode("int16", 235))
        await wait_for(lambda: len(alarms.events) >= 1, 30, what="High raised")
        high = alarms.events[0]
        f = fields(high)
        assert high.EventType == LIMIT_ALARM
        assert high.SourceName == "Stations/Partners/press/OilTemperature"
        assert high.SourceNode == opc.nodeid(TAG)
        assert high.NodeId == opc.nodeid(f"{TAG}/Alarms/Limit")
        assert f["ActiveState/Id"] is True and f["AckedState/Id"] is False
        assert f["ConfirmedState/Id"] is False and f["Retain"] is True
        assert f["LimitState/CurrentState"].Text == "High"
        assert f["LimitState/CurrentState/Id"] == ua.NodeId(ua.ObjectIds.ExclusiveLimitStateMachineType_High)
        assert f["HighLimit"] == 230.0 and f["HighHighLimit"] == 240.0
        assert high.Severity == 800
        assert high.Message.Text == "Press oil overheating: High (235)"

        condition = opc.client.get_node(high.NodeId)
        await condition.call_method(ACKNOWLEDGE, high.EventId, ua.LocalizedText("watching it", "en"))
        await wait_for(lambda: len(alarms.events) >= 2, 15, what="acknowledgement reported")
        assert fields(alarms.events[1])["AckedState/Id"] is True

        press_peer.set(1, 16, 10, encode("int16", 245))
        await wait_for(lambda: len(alarms.events) >= 3, 30, what="HighHigh raised")
        high_high = fields(alarms.events[2])
        assert high_high["LimitState/CurrentState"].Text == "HighHigh"
        assert high_high["LimitState/CurrentState/Id"] == ua.NodeId(ua.ObjectIds.ExclusiveLimitStateMachineType_HighHigh)
        # A new level asks for a new acknowledgement.
        assert high_high["AckedState/Id"] is False and high_high["ActiveState/Id"] is True

        press_peer.set(1, 16, 10, encode("int16", 200))
        await wait_for(lambda: len(alarms.events) >= 4, 30, what="back to normal")
        normal = alarms.events[3]
        f = fields(normal)
        assert f["ActiveState/Id"] is False
        assert f["Retain"] is True  # not acknowledged nor confirmed yet
        assert "back to normal" in normal.Message.Text

        # Confirm: viewers are refused, the EventId must be the last one, then once only.
        async with connect(gw, user=None, password=None) as viewer:
            await refused(viewer.client.get_node(normal.NodeId).call_method(CONFIRM, normal.EventId, ua.LocalizedText("", "en")), ua.StatusCodes.BadUserAccessDenied)
        await refused(condition.call_method(CONFIRM, high.EventId, ua.LocalizedText("", "en")), ua.StatusCodes.BadEventIdUnknown)
        await condition.call_method(ACKNOWLEDGE, normal.EventId, ua.LocalizedText("", "en"))
        await wait_for(lambda: len(alarms.events) >= 5, 15, what="acknowledged")
        acked = alarms.events[4]
        assert fields(acked)["Retain"] is True  # acknowledged, not yet confirmed
        await condition.call_method(CONFIRM, acked.EventId, ua.LocalizedText("valve replaced", "en"))
        await wait_for(lambda: len(alarms.events) >= 6, 15, what="confirmed")
        confirmed = alarms.events[5]
        f = fields(confirmed)
        assert f["ConfirmedState/Id"] is True and f["Retain"] is False
        assert confirmed.Comment.Text == "valve replaced"
        await refused(condition.call_method(CONFIRM, confirmed.EventId, ua.LocalizedText("", "en")), ua.StatusCodes.BadConditionBranchAlreadyConfirmed)
        await refused(condition.call_method(CONFIRM, confirmed.EventId), ua.StatusCodes.BadArgumentsMissing)

        # ConditionRefresh: start, the retained conditions (only), end; to this subscription.
        press_peer.set(1, 16, 10, encode("int16", 233))
        await wait_for(lambda: len(alarms.events) >= 7, 30, what="High again")
        again = alarms.events[6]
        condition_type = opc.client.get_node(ua.NodeId(ua.ObjectIds.ConditionType))
        other = Collector()
        other_sub, _ = await subscribe_limits(opc, other)
        await condition_type.call_method(REFRESH, ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
        await wait_for(lambda: len(alarms.events) >= 10, 15, what="refresh replayed")
        start, replayed, end = alarms.events[7:10]
        assert start.EventType == REFRESH_START
        assert replayed.EventType == LIMIT_ALARM
        assert replayed.EventId == again.EventId  # the same state, acknowledgeable with it
        assert fields(replayed)["LimitState/CurrentState"].Text == "High"
        assert end.EventType == REFRESH_END
        # ConditionRefresh2 on one monitored item.
        await condition_type.call_method(
            REFRESH2,
            ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
            ua.Variant(handle, ua.VariantType.UInt32),
        )
        await wait_for(lambda: len(alarms.events) >= 13, 15, what="refresh2 replayed")
        assert [e.EventType for e in alarms.events[10:13]] == [REFRESH_START, LIMIT_ALARM, REFRESH_END]
        await refused(
            condition_type.call_method(REFRESH, ua.Variant(987654, ua.VariantType.UInt32)),
            ua.StatusCodes.BadSubscriptionIdInvalid,
        )
        await refused(
            condition_type.call_method(
                REFRESH2,
                ua.Variant(sub.subscription_id, ua.VariantType.UInt32),
                ua.Variant(987654, ua.VariantType.UInt32),
            ),
            ua.StatusCodes.BadMonitoredItemIdInvalid,
        )
        # Another session's subscription is no subscription of this one.
        async with connect(gw) as stranger:
            await refused(
                stranger.client.get_node(ua.NodeId(ua.ObjectIds.ConditionType)).call_method(
                    REFRESH, ua.Variant(sub.subscription_id, ua.VariantType.UInt32)
                ),
                ua.StatusCodes.BadSubscriptionIdInvalid,
            )
        # The other subscription got no replay: one marker pair came through a refresh of its own only.
        await condition_type.call_method(REFRESH, ua.Variant(other_sub.subscription_id, ua.VariantType.UInt32))
        await wait_for(lambda: len(other.events) >= 3, 15, what="other refresh")
        assert [e.EventType for e in other.events] == [REFRESH_START, LIMIT_ALARM, REFRESH_END]


async def test_an_acknowledged_alarm_survives_a_kill_9(gateway_factory, tmp_path, press_peer):
    config = tmp_path / "press.toml"
    config.write_text(LIMITED_CONFIG.format(port=press_peer.port))
    gw = gateway_factory(name="persist", args=["--config", str(config)])
    async with connect(gw) as opc:
        await wait_for(lambda: opc.node(TAG).read_value(), 30, what="oil temperature read")
        alarms = Collector()
        await subscribe_limits(opc, alarms)
        press_peer.set(1, 16, 10, encode("int16", 236))
        await wait_for(lambda: len(alarms.events) >= 1, 30, what="High raised")
        raised = alarms.events[0]
        await opc.client.get_node(raised.NodeId).call_method(ACKNOWLEDGE, raised.EventId, ua.LocalizedText("seen before the crash", "en"))
        await wait_for(lambda: len(alarms.events) >= 2, 15, what="acknowledged")
        acked = alarms.events[1]
    # Good was answered: the acknowledgement is on disk. No clean shutdown.
    gw.proc.kill()
    gw.proc.wait(timeout=10)
    gw.stop()

    gw = gateway_factory(name="persist", args=["--config", str(config)])
    async with connect(gw) as opc:
        alarms = Collector()
        sub, _ = await subscribe_limits(opc, alarms)
        condition_type = opc.client.get_node(ua.NodeId(ua.ObjectIds.ConditionType))
        await condition_type.call_method(REFRESH, ua.Variant(sub.subscription_id, ua.VariantType.UInt32))
        await wait_for(lambda: any(e.EventType == REFRESH_END for e in alarms.events), 15, what="refresh")
        replayed = [e for e in alarms.events if e.EventType == LIMIT_ALARM]
        assert len(replayed) == 1
        f = fields(replayed[0])
        assert f["ActiveState/Id"] is True and f["AckedState/Id"] is True
        assert replayed[0].Comment.Text == "seen before the crash"
        assert replayed[0].EventId == acked.EventId
        # Still acknowledgeable state: confirm it with the EventId from before the crash.
        await opc.client.get_node(acked.NodeId).call_method(CONFIRM, acked.EventId, ua.LocalizedText("", "en"))


async def test_reloaded_limits_apply_to_the_value_the_tag_holds(gateway_factory, tmp_path, press_peer):
    from test_reload import reload_over_http

    config = tmp_path / "press.toml"
    config.write_text(LIMITED_CONFIG.format(port=press_peer.port))
    press_peer.set(1, 16, 10, encode("int16", 225))
    gw = gateway_factory(name="reload-limits", args=["--config", str(config)])
    async with connect(gw) as opc:
        async def reads_225():
            return await opc.node(TAG).read_value() == 225

        await wait_for(reads_225, 30, what="oil temperature 225")
        alarms = Collector()
        await subscribe_limits(opc, alarms)
        # Lower limits, same value: the alarm is raised by the reload alone.
        config.write_text(LIMITED_CONFIG.replace("high = 230.0", "high = 220.0").format(port=press_peer.port))
        status, body = await reload_over_http(gw)
        assert status == 200, body
        await wait_for(lambda: len(alarms.events) >= 1, 30, what="High raised by the reload")
        f = fields(alarms.events[0])
        assert f["LimitState/CurrentState"].Text == "High"
        assert f["HighLimit"] == 220.0
        # A bad limit is refused with the key that is wrong, and nothing changes.
        config.write_text(LIMITED_CONFIG.replace("high = 230.0", "high = 250.0").format(port=press_peer.port))
        status, body = await reload_over_http(gw)
        assert status == 400, body
        assert "tags[0].alarm.high_high" in str(body), body


@pytest.mark.parametrize(
    "case, text, key",
    [
        (
            "partner high_high below high",
            LIMITED_CONFIG.replace("high = 230.0", "high = 250.0").format(port=5020),
            "devices[0].tags[0].alarm.high_high",
        ),
        (
            "partner negative deadband",
            LIMITED_CONFIG.replace("deadband = 1.0", "deadband = -1.0").format(port=5020),
            "devices[0].tags[0].alarm.deadband",
        ),
        (
            "simulated low above high",
            '[[simulation.devices]]\nname = "Printer3D"\nstation = "Printing"\nkind = "printer3d"\n'
            "alarms = { NozzleTemperature = { high = 230.0, low = 240.0 } }\n",
            "simulation.devices[0].alarms.NozzleTemperature.high",
        ),
        (
            "simulated unknown tag",
            '[[simulation.devices]]\nname = "Printer3D"\nstation = "Printing"\nkind = "printer3d"\n'
            "alarms = { Nozzle = { high = 230.0 } }\n",
            "simulation.devices[0].alarms.Nozzle",
        ),
    ],
)
def test_check_names_the_key_and_file_of_bad_limits(gateway_bin, tmp_path, case, text, key):
    from test_config_cli import describe, run, write_config

    path = write_config(tmp_path, text, name="limits.toml")
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode != 0, f"{case} accepted:\n{describe(proc)}"
    assert key in proc.stderr, describe(proc)
    assert str(path) in proc.stderr, describe(proc)


def test_check_accepts_simulated_limits(gateway_bin, tmp_path):
    from test_config_cli import describe, run, write_config

    text = (
        '[[simulation.devices]]\nname = "Printer3D"\nstation = "Printing"\nkind = "printer3d"\n'
        "alarms = { NozzleTemperature = { high = 225.0, high_high = 235.0, severity = 900 } }\n"
    )
    path = write_config(tmp_path, text, name="limits.toml")
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)


PRINTER_CONFIG = """
[[simulation.devices]]
name = "Printer3D"
station = "Printing"
kind = "printer3d"
alarms = {{ NozzleTemperature = {{ {limits} }} }}
"""
NOZZLE = "Stations/Printing/Printer3D/NozzleTemperature"


async def test_reloaded_limits_of_a_simulated_machine_apply_without_a_restart(gateway_factory, tmp_path):
    """The simulated printer's nozzle limits change by POST /api/admin/reload and by SIGHUP:
    the simulator is not restarted (the same session sees the alarm come and go on the value
    the nozzle holds); bad limits are refused naming the key and the file, and change nothing."""
    import signal

    from test_reload import reload_over_http

    config = tmp_path / "printer.toml"
    config.write_text(PRINTER_CONFIG.format(limits="high = 400.0, high_high = 450.0"))
    gw = gateway_factory(name="reload-simulated-limits", args=["--config", str(config)])
    async with connect(gw) as opc:
        nozzle = opc.node(f"Fabrique/{NOZZLE}")
        await wait_for(lambda: _finite(nozzle), 30, what="a nozzle temperature")
        alarms = Collector()
        await subscribe_limits(opc, alarms, notifier="Fabrique/Stations/Printing")

        # A high limit far below any nozzle temperature: High at once, by the reload alone.
        config.write_text(PRINTER_CONFIG.format(limits='high = -100.0, high_high = 450.0, severity = 900, message = "Reloaded nozzle"'))
        status, body = await reload_over_http(gw)
        assert status == 200, body
        assert body["alarm_limits"] == [NOZZLE], body
        assert body["changed"] == [] and body["added"] == [], body
        await wait_for(lambda: len(alarms.events) >= 1, 30, what="High raised by the reload")
        raised = fields(alarms.events[0])
        assert raised["LimitState/CurrentState"].Text == "High"
        assert raised["HighLimit"] == -100.0
        assert raised["Severity"] == 900
        assert raised["Message"].Text.startswith("Reloaded nozzle: High")
        assert raised["ActiveState/Id"] is True

        # Bad limits: refused with the key and the file; the running limits stay.
        config.write_text(PRINTER_CONFIG.format(limits="high = 400.0, low = 500.0"))
        status, body = await reload_over_http(gw)
        assert status == 400, body
        assert "simulation.devices[0].alarms.NozzleTemperature.high" in str(body), body
        assert str(config) in str(body), body
        # Anything else of a simulated machine still needs a restart.
        config.write_text(PRINTER_CONFIG.format(limits="high = 400.0").replace('kind = "printer3d"', 'kind = "printer3d"\nout_of_service = true'))
        status, body = await reload_over_http(gw)
        assert status == 400, body
        assert "restart" in str(body), body

        # Back to the first limits by SIGHUP: the alarm goes back to normal.
        config.write_text(PRINTER_CONFIG.format(limits="high = 400.0, high_high = 450.0"))
        gw.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: any(fields(e)["ActiveState/Id"] is False for e in alarms.events), 30, what="back to normal after SIGHUP")
        normal = next(fields(e) for e in alarms.events if fields(e)["ActiveState/Id"] is False)
        assert normal["HighLimit"] == 400.0
        # The same simulator all along: the nozzle still has its values on this session.
        assert await _finite(nozzle)


async def _finite(node) -> bool:
    value = await node.read_value()
    return isinstance(value, float) and value == value


PRESS_LIMIT = "Stations/Partners/press/OilTemperature/Limit"
BACK_TO_NORMAL = [(PRESS_LIMIT, False), (PRESS_LIMIT, True)]


async def test_the_recent_alarm_list_survives_a_restart_and_a_kill_9(gateway_factory, tmp_path, press_peer):
    """GET /api/alarms: the recent changes (an alarm raised, then back to normal) are still
    listed after a clean restart and after a kill -9, rebuilt from the event history; with
    the historian off, from the alarm state file (the condition's last state). Only the
    press's alarm is looked at (the simulated truck may raise its own meanwhile)."""
    from test_alarms_north import call

    async def press_recent(gw) -> list[dict]:
        status, body = await call(gw, "GET", "/api/alarms")
        assert status == 200, body
        return [a for a in body["recent"] if a["id"] == PRESS_LIMIT]

    async def recent_is(gw, expected: list[tuple[str, bool]]) -> bool:
        return [(a["id"], a["active"]) for a in await press_recent(gw)] == expected

    config = tmp_path / "press.toml"
    config.write_text(LIMITED_CONFIG.format(port=press_peer.port))
    gw = gateway_factory(name="recent", args=["--config", str(config)])
    async with connect(gw) as opc:
        await wait_for(lambda: opc.node(TAG).read_value(), 30, what="oil temperature read")
        press_peer.set(1, 16, 10, encode("int16", 236))
        await wait_for(lambda: recent_is(gw, [(PRESS_LIMIT, True)]), 30, what="the alarm in the recent list")
        press_peer.set(1, 16, 10, encode("int16", 200))
        await wait_for(lambda: recent_is(gw, BACK_TO_NORMAL), 30, what="back to normal in the recent list")
    before = await press_recent(gw)

    # A clean restart: the same entries (same EventIds, times, messages), newest first.
    gw.stop()
    gw = gateway_factory(name="recent", args=["--config", str(config)])
    await wait_for(lambda: recent_is(gw, BACK_TO_NORMAL), 15, what="the recent list after a restart")
    assert await press_recent(gw) == before

    # A kill -9: the same again.
    gw.proc.kill()
    gw.proc.wait(timeout=10)
    gw.stop()
    gw = gateway_factory(name="recent", args=["--config", str(config)])
    await wait_for(lambda: recent_is(gw, BACK_TO_NORMAL), 15, what="the recent list after kill -9")
    assert await press_recent(gw) == before
    gw.stop()

    # Without the historian: the condition's last state, from the alarm state file.
    gw = gateway_factory(name="recent", args=["--config", str(config)], env={"FABRIQUE__HISTORY__ENABLED": "false"})
    await wait_for(lambda: recent_is(gw, BACK_TO_NORMAL[:1]), 15, what="the recent list from the alarm state file")
    assert await press_recent(gw) == before[:1]
