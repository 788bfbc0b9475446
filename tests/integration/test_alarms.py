"""Alarms and Conditions (Part 9): a device's communication is an OffNormalAlarmType
condition, raised when a real pymodbus peer stops answering and cleared when it returns,
reported to asyncua's condition subscription on the device's station, and acknowledged
(by an operator, not a viewer), commented, disabled, enabled and confirmed.
"""

from __future__ import annotations

import pytest
from asyncua import ua
from asyncua.common.events import select_clauses_from_evtype

from fabrique_testlib import connect, wait_for
from peer_modbus import PeerProcess, free_port
from test_events import PRESS_CONFIG, Collector


@pytest.fixture
def press_peer(tmp_path):
    peer = PeerProcess(tmp_path / "peer.log", port=free_port())
    peer.start()
    yield peer
    peer.kill()


def of_type(type_id: ua.NodeId) -> ua.ContentFilter:
    """OfType(type): asyncua's default `EventType InList [...]` matches nothing on
    async-opcua 0.19 (see test_events.py)."""
    element = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.OfType,
        FilterOperands=[ua.LiteralOperand(Value=ua.Variant(type_id))],
    )
    return ua.ContentFilter(Elements=[element])


def condition_id_through_base_event_type(clauses: list[ua.SimpleAttributeOperand]) -> list[ua.SimpleAttributeOperand]:
    """The ConditionId clause (empty path, attribute NodeId) asked through BaseEventType.

    async-opcua-nodes 0.19 rejects it through ConditionType (as the standard and asyncua ask
    it) and then drops it from the event's fields, which shifts every field after it: the
    gateway answers it through BaseEventType, which that validation accepts."""
    for clause in clauses:
        if not clause.BrowsePath and clause.AttributeId == ua.AttributeIds.NodeId:
            clause.TypeDefinitionId = ua.NodeId(ua.ObjectIds.BaseEventType)
    return clauses


async def test_a_lost_device_raises_an_off_normal_alarm_cleared_on_its_return(gateway_factory, tmp_path, press_peer):
    config = tmp_path / "press.toml"
    config.write_text(PRESS_CONFIG.format(port=press_peer.port))
    gw = gateway_factory(name="alarms", args=["--config", str(config)])
    async with connect(gw) as opc:
        connected = opc.node("Fabrique/Stations/Partners/press/Status/Connected")
        await wait_for(connected.read_value, 30, what="press connected")

        off_normal = opc.client.get_node(ua.NodeId(ua.ObjectIds.OffNormalAlarmType))
        alarms = Collector()
        sub = await opc.client.create_subscription(50, alarms)
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = condition_id_through_base_event_type(await select_clauses_from_evtype([off_normal]))
        evfilter.WhereClause = of_type(off_normal.nodeid)
        await sub.subscribe_alarms_and_conditions(opc.node("Fabrique/Stations/Partners"), off_normal, evfilter, queuesize=100)

        press_peer.kill()
        await wait_for(lambda: len(alarms.events) >= 1, 30, what="communication alarm raised")
        raised = alarms.events[0]
        fields = raised.get_event_props_as_fields_dict()
        assert raised.EventType == off_normal.nodeid
        assert raised.SourceNode == opc.nodeid("Fabrique/Stations/Partners/press")
        assert raised.SourceName == "Stations/Partners/press"
        assert raised.ConditionName == "Communication"
        assert fields["ActiveState/Id"].Value is True, fields
        assert raised.ActiveState.Text == "Active"
        assert fields["AckedState/Id"].Value is False
        assert fields["ConfirmedState/Id"].Value is False
        assert fields["EnabledState/Id"].Value is True
        assert raised.Retain is True
        assert raised.Severity == 700
        assert "communication lost" in raised.Message.Text
        assert raised.Comment.Text in (None, "")
        assert raised.EventId
        assert raised.NodeId == opc.nodeid("Fabrique/Stations/Partners/press/Alarms/Communication")

        condition = opc.client.get_node(raised.NodeId)
        acknowledge = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
        comment = ua.LocalizedText("cable checked", "en")

        # A viewer may not acknowledge.
        async with connect(gw, user=None, password=None) as viewer:
            with pytest.raises(ua.UaStatusCodeError) as refused:
                await viewer.client.get_node(raised.NodeId).call_method(acknowledge, raised.EventId, comment)
            assert refused.value.code == ua.StatusCodes.BadUserAccessDenied
        # An EventId that is no event of this condition.
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await condition.call_method(acknowledge, b"no such event", comment)
        assert refused.value.code == ua.StatusCodes.BadEventIdUnknown

        await condition.call_method(acknowledge, raised.EventId, comment)
        await wait_for(lambda: len(alarms.events) >= 2, 15, what="acknowledgement reported")
        acked = alarms.events[1]
        fields = acked.get_event_props_as_fields_dict()
        assert fields["AckedState/Id"].Value is True
        assert fields["ActiveState/Id"].Value is True
        assert acked.Comment.Text == "cable checked"
        assert acked.Retain is True
        # The same state cannot be acknowledged twice.
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await condition.call_method(acknowledge, acked.EventId, comment)
        assert refused.value.code == ua.StatusCodes.BadConditionBranchAlreadyAcked

        # AddComment on the acknowledged state: a new event with the comment, still acked.
        add_comment = ua.NodeId(ua.ObjectIds.ConditionType_AddComment)
        await condition.call_method(add_comment, acked.EventId, ua.LocalizedText("spare cable ordered", "en"))
        await wait_for(lambda: len(alarms.events) >= 3, 15, what="comment reported")
        commented = alarms.events[2]
        assert commented.Comment.Text == "spare cable ordered"
        assert commented.get_event_props_as_fields_dict()["AckedState/Id"].Value is True
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await condition.call_method(add_comment, acked.EventId, comment)
        assert refused.value.code == ua.StatusCodes.BadEventIdUnknown

        # Disable: reported once (not retained), then Enable reports the state it is in.
        disable = ua.NodeId(ua.ObjectIds.ConditionType_Disable)
        enable = ua.NodeId(ua.ObjectIds.ConditionType_Enable)
        await condition.call_method(disable)
        await wait_for(lambda: len(alarms.events) >= 4, 15, what="disable reported")
        disabled = alarms.events[3].get_event_props_as_fields_dict()
        assert disabled["EnabledState/Id"].Value is False
        assert disabled["Retain"].Value is False
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await condition.call_method(disable)
        assert refused.value.code == ua.StatusCodes.BadConditionAlreadyDisabled
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await condition.call_method(add_comment, alarms.events[3].EventId, comment)
        assert refused.value.code == ua.StatusCodes.BadConditionDisabled
        await condition.call_method(enable)
        await wait_for(lambda: len(alarms.events) >= 5, 15, what="enable reported")
        enabled = alarms.events[4].get_event_props_as_fields_dict()
        assert enabled["EnabledState/Id"].Value is True
        assert enabled["ActiveState/Id"].Value is True
        assert enabled["Retain"].Value is True
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await condition.call_method(enable)
        assert refused.value.code == ua.StatusCodes.BadConditionAlreadyEnabled

        press_peer.start()
        await wait_for(connected.read_value, 60, what="press connected again")
        await wait_for(lambda: len(alarms.events) >= 6, 15, what="communication alarm cleared")
        cleared = alarms.events[5]
        fields = cleared.get_event_props_as_fields_dict()
        assert fields["ActiveState/Id"].Value is False
        assert fields["AckedState/Id"].Value is True
        # Inactive and acknowledged but not confirmed: still retained (Part 9, 5.5.2).
        assert cleared.Retain is True
        assert "communication restored" in cleared.Message.Text
        assert cleared.NodeId == raised.NodeId
        assert cleared.EventId != raised.EventId

        confirm = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Confirm)
        await condition.call_method(confirm, cleared.EventId, ua.LocalizedText("", "en"))
        await wait_for(lambda: len(alarms.events) >= 7, 15, what="confirmation reported")
        confirmed = alarms.events[6].get_event_props_as_fields_dict()
        assert confirmed["ConfirmedState/Id"].Value is True
        # Inactive, acknowledged and confirmed: no longer retained.
        assert confirmed["Retain"].Value is False
