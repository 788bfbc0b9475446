"""OPC UA events: the gateway's event types, the notifier hierarchy (Server → Fabrique →
Stations → station → device) and EventFilter select and where clauses, with asyncua's
event subscriptions. A real pymodbus peer is stopped and started again; the stop is changed
over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from asyncua import ua
from asyncua.common.events import select_clauses_from_evtype

from fabrique_testlib import ADMIN_TOKEN, connect, wait_for
from peer_modbus import PRESS_CONFIG, PeerProcess, free_port


DEVICE_CONNECTION = 5004
STOP_CHANGED = 5005


class Collector:
    def __init__(self):
        self.events = []

    def event_notification(self, event):
        self.events.append(event)


@pytest.fixture
def press_peer(tmp_path):
    peer = PeerProcess(tmp_path / "peer.log", port=free_port())
    peer.start()
    yield peer
    peer.kill()


def put_stop(gw, town: str) -> int:
    body = json.dumps({"town": town, "venue": "Halle", "first_day": "2026-12-07", "last_day": "2026-12-11"})
    request = urllib.request.Request(
        f"{gw.http_url}/api/stop",
        data=body.encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def where_of_types(type_ids: list[ua.NodeId]) -> ua.ContentFilter:
    """OfType(a) OR OfType(b)."""
    or_ = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.Or,
        FilterOperands=[ua.ElementOperand(Index=1), ua.ElementOperand(Index=2)],
    )
    of_types = [
        ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.OfType,
            FilterOperands=[ua.LiteralOperand(Value=ua.Variant(t))],
        )
        for t in type_ids
    ]
    return ua.ContentFilter(Elements=[or_, *of_types])


def where_of_type_and_severity(type_id: ua.NodeId, min_severity: int) -> ua.ContentFilter:
    """OfType(type) AND Severity >= min_severity."""
    severity = ua.SimpleAttributeOperand()
    severity.TypeDefinitionId = ua.NodeId(ua.ObjectIds.BaseEventType)
    severity.BrowsePath = [ua.QualifiedName("Severity", 0)]
    severity.AttributeId = ua.AttributeIds.Value
    and_ = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.And,
        FilterOperands=[ua.ElementOperand(Index=1), ua.ElementOperand(Index=2)],
    )
    of_type = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.OfType,
        FilterOperands=[ua.LiteralOperand(Value=ua.Variant(type_id))],
    )
    at_least = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.GreaterThanOrEqual,
        FilterOperands=[severity, ua.LiteralOperand(Value=ua.Variant(min_severity, ua.VariantType.UInt16))],
    )
    return ua.ContentFilter(Elements=[and_, of_type, at_least])


async def test_device_and_stop_events_reach_their_notifiers_filtered(gateway_factory, tmp_path, press_peer):
    config = tmp_path / "press.toml"
    config.write_text(PRESS_CONFIG.format(port=press_peer.port))
    gw = gateway_factory(name="events", args=["--config", str(config)])
    async with connect(gw) as opc:
        connected = opc.node("Fabrique/Stations/Partners/press/Status/Connected")
        await wait_for(connected.read_value, 30, what="press connected")

        # The notifier hierarchy: EventNotifier set, HasNotifier from Server down to the device.
        for path in ["Fabrique", "Fabrique/Stations", "Fabrique/Stations/Partners", "Fabrique/Stations/Partners/press"]:
            notifier = await opc.node(path).read_event_notifier()
            assert ua.EventNotifier.SubscribeToEvents in notifier, path
        children = await opc.node("Fabrique/Stations").get_referenced_nodes(
            refs=ua.ObjectIds.HasNotifier, direction=ua.BrowseDirection.Forward
        )
        assert opc.nodeid("Fabrique/Stations/Partners") in [c.nodeid for c in children]

        connection_type = opc.client.get_node(ua.NodeId(DEVICE_CONNECTION, opc.types))
        stop_type = opc.client.get_node(ua.NodeId(STOP_CHANGED, opc.types))

        # On Server, both types (asyncua's own where clause, `EventType InList [...]`, matches
        # nothing on async-opcua 0.19, which compares no NodeIds: OfType does the same job).
        everything = Collector()
        on_server = await opc.client.create_subscription(50, everything)
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = await select_clauses_from_evtype([connection_type, stop_type])
        evfilter.WhereClause = where_of_types([connection_type.nodeid, stop_type.nodeid])
        await on_server.subscribe_events(ua.ObjectIds.Server, [connection_type, stop_type], evfilter, queuesize=100)

        # On the station, only device-connection events of severity 500 or more (a loss).
        serious = Collector()
        on_station = await opc.client.create_subscription(50, serious)
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = await select_clauses_from_evtype([connection_type])
        evfilter.WhereClause = where_of_type_and_severity(connection_type.nodeid, 500)
        await on_station.subscribe_events(opc.node("Fabrique/Stations/Partners"), connection_type, evfilter, queuesize=100)

        press_peer.kill()
        await wait_for(lambda: len(serious.events) >= 1, 30, what="connection lost on the station")
        lost = serious.events[0]
        assert lost.Connected is False
        assert lost.Device == "Stations/Partners/press"
        assert lost.Severity == 700
        assert lost.SourceNode == opc.nodeid("Fabrique/Stations/Partners/press")
        assert "connection lost" in lost.Message.Text
        await wait_for(lambda: len(everything.events) >= 1, 10, what="connection lost on Server")

        press_peer.start()
        # The adapter's reconnection delay has grown while the peer was away.
        await wait_for(connected.read_value, 60, what="press connected again")
        await wait_for(
            lambda: any(getattr(e, "Connected", None) is True for e in everything.events),
            10,
            what="connection restored on Server",
        )
        assert put_stop(gw, "Béthune") == 200
        await wait_for(
            lambda: any(getattr(e, "Town", None) == "Béthune" for e in everything.events),
            15,
            what="stop changed on Server",
        )
        await asyncio.sleep(1)
        # The station saw the loss only: not the restore (severity 300), not the stop.
        assert [e.Connected for e in serious.events] == [False]
        seen = [(e.Connected, e.Message.Text) for e in everything.events if e.EventType == connection_type.nodeid]
        assert [c for c, _ in seen][:2] == [False, True], str(seen)
        # Each event once, though it is reported on the device, the station and Server.
        ids = [e.EventId for e in everything.events]
        assert len(ids) == len(set(ids))
        stop = next(e for e in everything.events if getattr(e, "Town", None) == "Béthune")
        assert stop.EventType == stop_type.nodeid
        assert stop.Severity == 100


SPEED_SETPOINT = "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint"


async def test_writes_and_calls_are_audited_with_who_and_the_result(gateway):
    audit_write = ua.NodeId(ua.ObjectIds.AuditWriteUpdateEventType)
    audit_call = ua.NodeId(ua.ObjectIds.AuditUpdateMethodEventType)
    async with connect(gateway) as opc:
        audits = Collector()
        sub = await opc.client.create_subscription(50, audits)
        types = [opc.client.get_node(audit_write), opc.client.get_node(audit_call)]
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = await select_clauses_from_evtype(types)
        evfilter.WhereClause = where_of_types([audit_write, audit_call])
        await sub.subscribe_events(ua.ObjectIds.Server, types, evfilter, queuesize=100)

        setpoint = await opc.read(SPEED_SETPOINT)
        assert (await opc.write_status(SPEED_SETPOINT, ua.Variant(setpoint, ua.VariantType.Double))).is_good()
        args = (ua.Variant("Nope", ua.VariantType.String), ua.Variant("x", ua.VariantType.String))
        result = await opc.call("Fabrique/Line", "SubmitOrder", *args)
        assert not result.StatusCode.is_good()
        await wait_for(lambda: len(audits.events) >= 2, 15, what=lambda: f"two audit events, got {audits.events}")
        writes = [e for e in audits.events if e.EventType == audit_write]
        assert [(e.ClientUserId, e.Status, e.AttributeId) for e in writes] == [("operator", True, 13)]
        assert writes[0].SourceNode == opc.nodeid(SPEED_SETPOINT)
        calls = [e for e in audits.events if e.EventType == audit_call]
        assert [(e.ClientUserId, e.Status) for e in calls] == [("operator", False)]
        assert calls[0].MethodId == opc.nodeid("Fabrique/Line/SubmitOrder")
        assert calls[0].StatusCodeId == result.StatusCode
