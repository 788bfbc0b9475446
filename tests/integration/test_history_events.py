"""HistoryReadEvents: the gateway's events and alarm state changes are stored and read back by
asyncua's HistoryRead with an EventFilter (select and where clauses), with continuation
points, newest first on a reversed range, after a kill -9, and with the standard status codes
for bad requests. See the README, section "Historical events".
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from asyncua import ua

from fabrique_testlib import ADMIN_TOKEN, connect, wait_for
from peer_modbus import PeerProcess, free_port
from test_alarms_north import call
from test_events import PRESS_CONFIG

NULL_TIME = datetime(1601, 1, 1, tzinfo=timezone.utc)
DEVICE_CONNECTION = 5004
FIELDS = ["EventType", "SourceName", "Severity", "Message", "EventId", "Time", "ActiveState/Id", "AckedState/Id", "Comment"]


@pytest.fixture
def press_peer(tmp_path):
    peer = PeerProcess(tmp_path / "peer.log", port=free_port())
    peer.start()
    yield peer
    peer.kill()


def clause(path: str) -> ua.SimpleAttributeOperand:
    op = ua.SimpleAttributeOperand()
    op.TypeDefinitionId = ua.NodeId(ua.ObjectIds.BaseEventType)
    op.BrowsePath = [ua.QualifiedName(p, 0) for p in path.split("/")]
    op.AttributeId = ua.AttributeIds.Value
    return op


def event_filter(where: list[ua.ContentFilterElement] | None = None, fields: list[str] = FIELDS) -> ua.EventFilter:
    f = ua.EventFilter()
    f.SelectClauses = [clause(p) for p in fields]
    f.WhereClause = ua.ContentFilter(Elements=where or [])
    return f


def of_type(type_id: ua.NodeId) -> list[ua.ContentFilterElement]:
    return [ua.ContentFilterElement(FilterOperator=ua.FilterOperator.OfType, FilterOperands=[ua.LiteralOperand(Value=ua.Variant(type_id))])]


def severity_at_least(n: int) -> list[ua.ContentFilterElement]:
    return [
        ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.GreaterThanOrEqual,
            FilterOperands=[clause("Severity"), ua.LiteralOperand(Value=ua.Variant(n, ua.VariantType.UInt16))],
        )
    ]


async def history_events(opc, node_id, start, end, evfilter, num: int = 0, cp: bytes | None = None) -> ua.HistoryReadResult:
    details = ua.ReadEventDetails()
    details.StartTime = start
    details.EndTime = end
    details.NumValuesPerNode = num
    details.Filter = evfilter
    value = ua.HistoryReadValueId()
    value.NodeId = node_id
    value.ContinuationPoint = cp
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = ua.TimestampsToReturn.Both
    params.ReleaseContinuationPoints = False
    params.NodesToRead = [value]
    return (await opc.client.uaclient.history_read(params))[0]


def rows(result: ua.HistoryReadResult, fields: list[str] = FIELDS) -> list[dict]:
    assert result.StatusCode.is_good(), result.StatusCode
    return [{f: v.Value for f, v in zip(fields, e.EventFields)} for e in result.HistoryData.Events]


async def test_events_and_alarm_changes_are_read_back_with_a_filter_and_survive_a_kill(gateway_factory, tmp_path, press_peer):
    config = tmp_path / "press.toml"
    config.write_text(PRESS_CONFIG.format(port=press_peer.port))
    args = ["--config", str(config)]
    gw = gateway_factory(name="history-events", args=args)
    async with connect(gw) as opc:
        station = opc.nodeid("Fabrique/Stations/Partners")
        await wait_for(opc.node("Fabrique/Stations/Partners/press/Status/Connected").read_value, 30, what="press connected")
        # After the press's first connection (an event too: `restored`), before its loss.
        start = datetime.now(timezone.utc)
        for path in ["Fabrique", "Fabrique/Stations", "Fabrique/Stations/Partners", "Fabrique/Stations/Partners/press"]:
            notifier = await opc.node(path).read_event_notifier()
            assert ua.EventNotifier.HistoryRead in notifier, path
        # HistoryServerCapabilities: read-only data and events history, with the aggregates.
        def capability(name: str):
            return opc.client.get_node(ua.NodeId(getattr(ua.ObjectIds, f"HistoryServerCapabilities_{name}"))).read_value()

        assert await capability("AccessHistoryDataCapability") is True
        assert await capability("AccessHistoryEventsCapability") is True
        assert await capability("InsertDataCapability") is False
        assert await capability("DeleteEventCapability") is False
        assert await capability("MaxReturnEventValues") == 100000
        aggregates = await opc.client.get_node(ua.NodeId(ua.ObjectIds.HistoryServerCapabilities_AggregateFunctions)).get_children()
        assert {ua.NodeId(getattr(ua.ObjectIds, f"AggregateFunction_{a}")) for a in ("Average", "Minimum", "Maximum", "Count", "Interpolative", "TimeAverage", "Total")} <= {c.nodeid for c in aggregates}
        device_connection = ua.NodeId(DEVICE_CONNECTION, await opc.client.get_namespace_index("urn:fabrique-gateway:types"))
        off_normal = ua.NodeId(ua.ObjectIds.OffNormalAlarmType)

        # Lost, acknowledged over HTTP, back.
        press_peer.kill()
        status, body = await wait_for(lambda: _active(gw), 30, what="alarm raised")
        raised_id = body["active"][0]["event_id"]
        status, _ = await call(gw, "POST", "/api/alarms/Stations/Partners/press/Communication/ack", json.dumps({"comment": "seen"}).encode(), ADMIN_TOKEN)
        assert status == 200
        press_peer.start()

        async def all_five():
            got = rows(await history_events(opc, station, start, datetime.now(timezone.utc) + timedelta(minutes=1), event_filter()))
            return got if len(got) >= 5 else None

        got = await wait_for(all_five, 60, what="five stored events")
        assert [(r["EventType"], r["ActiveState/Id"], r["AckedState/Id"]) for r in got] == [
            (device_connection, None, None),
            (off_normal, True, False),
            (off_normal, True, True),
            (device_connection, None, None),
            (off_normal, False, True),
        ], [(r["EventType"].Identifier, r["Severity"], r["Message"].Text, r["Time"]) for r in got]
        assert {r["SourceName"] for r in got} == {"press", "Stations/Partners/press"}
        assert got[1]["EventId"].hex() == raised_id
        assert got[2]["Comment"].Text == "seen"
        assert "communication lost" in got[1]["Message"].Text
        assert [r["Time"] for r in got] == sorted(r["Time"] for r in got)
        end = datetime.now(timezone.utc) + timedelta(minutes=1)

        # Where clauses the live path supports: OfType, Severity >= 500.
        conditions = rows(await history_events(opc, station, start, end, event_filter(of_type(off_normal))))
        assert [(r["ActiveState/Id"], r["AckedState/Id"]) for r in conditions] == [(True, False), (True, True), (False, True)]
        severe = rows(await history_events(opc, station, start, end, event_filter(severity_at_least(500))))
        assert [r["Severity"] for r in severe] == [700, 700, 700, 700]

        # Continuation points: two at a time, the same five in the same order.
        pages, cp = [], None
        for _ in range(10):
            result = await history_events(opc, station, start, end, event_filter(), num=2, cp=cp)
            page = rows(result)
            assert len(page) <= 2
            pages.extend(page)
            cp = result.ContinuationPoint
            if not cp:
                break
        assert [r["EventId"] for r in pages] == [r["EventId"] for r in got]

        # Reversed range: newest first.
        newest_first = rows(await history_events(opc, station, end, start, event_filter()))
        assert [r["EventId"] for r in newest_first] == [r["EventId"] for r in reversed(got)]

        # Another station's notifier has none of them; Fabrique has them all.
        everything = rows(await history_events(opc, opc.nodeid("Fabrique"), start, end, event_filter()))
        assert {r["EventId"] for r in got} <= {r["EventId"] for r in everything}
        line = rows(await history_events(opc, opc.nodeid("Fabrique/Line"), start, end, event_filter(of_type(off_normal))))
        assert line == []

        # A select clause async-opcua refuses is a null field in its place, not a shift.
        bad_clause = ua.SimpleAttributeOperand(TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType), BrowsePath=None, AttributeId=ua.AttributeIds.Value)
        f = event_filter(fields=["Severity"])
        f.SelectClauses = [bad_clause, clause("Severity")]
        result = await history_events(opc, station, start, end, f)
        assert result.StatusCode.is_good()
        assert [[v.Value for v in e.EventFields] for e in result.HistoryData.Events][:2] == [[None, 700], [None, 700]]

        # Bad requests, each with its status code.
        result = await history_events(opc, station, NULL_TIME, NULL_TIME, event_filter())
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidTimestampArgument
        result = await history_events(opc, station, start, NULL_TIME, event_filter())
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidTimestampArgument
        result = await history_events(opc, station, start, end, event_filter(fields=[]))
        assert result.StatusCode.value == ua.StatusCodes.BadEventFilterInvalid
        result = await history_events(opc, station, start, end, event_filter(), cp=b"forged")
        assert result.StatusCode.value == ua.StatusCodes.BadContinuationPointInvalid
        result = await history_events(opc, opc.nodeid("Fabrique/Stations/Partners/press/Status/Connected"), start, end, event_filter())
        assert result.StatusCode.value == ua.StatusCodes.BadHistoryOperationUnsupported
        # The start plus a count: that many from the start on.
        first_two = rows(await history_events(opc, station, start, NULL_TIME, event_filter(), num=2))
        assert [r["EventId"] for r in first_two] == [r["EventId"] for r in got[:2]]

    # kill -9, then the same data directory: the events are still there.
    gw.proc.kill()
    gw.proc.wait(timeout=10)
    again = gateway_factory(name="history-events", args=args)
    async with connect(again) as opc:
        station = opc.nodeid("Fabrique/Stations/Partners")
        kept = rows(await history_events(opc, station, start, end, event_filter()))
        assert [r["EventId"] for r in kept[:5]] == [r["EventId"] for r in got]


async def _active(gw):
    status, body = await call(gw, "GET", "/api/alarms")
    return (status, body) if body["active"] else None


ORDER_SUBMITTED = 5001
SETPOINT = "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint"


# The type that declares each field (async-opcua 0.19 finds a field by the type named in the
# clause, not by a subtype of it).
DECLARED_BY = {
    "ClientUserId": ua.ObjectIds.AuditEventType,
    "Status": ua.ObjectIds.AuditEventType,
    "ServerId": ua.ObjectIds.AuditEventType,
    "AttributeId": ua.ObjectIds.AuditWriteUpdateEventType,
    "MethodId": ua.ObjectIds.AuditUpdateMethodEventType,
    "StatusCodeId": ua.ObjectIds.AuditUpdateMethodEventType,
}


def audit_filter(event_type: ua.NodeId, fields: list[str]) -> ua.EventFilter:
    f = event_filter(of_type(event_type), fields)
    for op, field in zip(f.SelectClauses, fields):
        op.TypeDefinitionId = ua.NodeId(DECLARED_BY.get(field, ua.ObjectIds.BaseEventType))
    return f


async def test_audit_events_are_stored_and_server_reads_every_event(gateway):
    """Writes and method calls leave audit events in the event history (who, what, result),
    read back on `Fabrique` and on `Server`; `Server`'s history holds every event of the
    gateway (an order submitted too), a station's none of the audit events."""
    audit_write = ua.NodeId(ua.ObjectIds.AuditWriteUpdateEventType)
    audit_call = ua.NodeId(ua.ObjectIds.AuditUpdateMethodEventType)
    server = ua.NodeId(ua.ObjectIds.Server)
    async with connect(gateway) as opc:
        notifier = await opc.client.get_node(server).read_event_notifier()
        assert ua.EventNotifier.HistoryRead in notifier
        assert ua.EventNotifier.SubscribeToEvents in notifier
        start = datetime.now(timezone.utc) - timedelta(seconds=1)

        setpoint = await opc.read(SETPOINT)
        assert (await opc.write_status(SETPOINT, ua.Variant(setpoint, ua.VariantType.Double))).is_good()
        refused = await opc.call("Fabrique/Line", "SubmitOrder", ua.Variant("Nope", ua.VariantType.String), ua.Variant("x", ua.VariantType.String))
        assert not refused.StatusCode.is_good()
        submitted = await opc.submit_order("Classic", "Audit")
        assert submitted.StatusCode.is_good(), submitted.StatusCode
        async with connect(gateway, user=None, password=None) as viewer:
            denied = await viewer.write_status(SETPOINT, ua.Variant(setpoint, ua.VariantType.Double))
            assert denied.value == ua.StatusCodes.BadUserAccessDenied

        # Writes: OfType AuditWriteUpdateEventType, with the audit fields selected.
        write_fields = ["EventType", "ClientUserId", "Status", "SourceNode", "AttributeId", "ServerId", "EventId"]
        writes_filter = audit_filter(audit_write, write_fields)

        async def writes_on(node):
            end = datetime.now(timezone.utc) + timedelta(minutes=1)
            got = rows(await history_events(opc, node, start, end, writes_filter), write_fields)
            mine = [r for r in got if r["SourceNode"] == opc.nodeid(SETPOINT)]
            return mine if len(mine) >= 2 else None

        writes = await wait_for(lambda: writes_on(server), 15, what="two stored audit writes on Server")
        assert [(r["EventType"], r["ClientUserId"], r["Status"], r["AttributeId"]) for r in writes] == [
            (audit_write, "operator", True, ua.AttributeIds.Value),
            (audit_write, "ANONYMOUS", False, ua.AttributeIds.Value),
        ], writes
        assert writes[0]["ServerId"].startswith("urn:")
        # The same events on Fabrique (where they are reported live too).
        on_fabrique = await writes_on(opc.nodeid("Fabrique"))
        assert [r["EventId"] for r in on_fabrique] == [r["EventId"] for r in writes]

        # Calls: OfType AuditUpdateMethodEventType, the refused one and the order.
        call_fields = ["EventType", "ClientUserId", "Status", "MethodId", "StatusCodeId", "SourceNode"]
        calls_filter = audit_filter(audit_call, call_fields)
        end = datetime.now(timezone.utc) + timedelta(minutes=1)
        calls = rows(await history_events(opc, server, start, end, calls_filter), call_fields)
        calls = [r for r in calls if r["MethodId"] == opc.nodeid("Fabrique/Line/SubmitOrder")]
        assert [(r["ClientUserId"], r["Status"]) for r in calls] == [("operator", False), ("operator", True)], calls
        assert calls[0]["StatusCodeId"] == refused.StatusCode
        assert calls[0]["SourceNode"] == opc.nodeid("Fabrique/Line")

        # Server has every event: the order submitted is there, between the audits.
        order_type = ua.NodeId(ORDER_SUBMITTED, opc.types)
        everything = rows(await history_events(opc, server, start, end, event_filter(fields=["EventType", "Time"])), ["EventType", "Time"])
        types = [r["EventType"] for r in everything]
        assert audit_write in types and audit_call in types and order_type in types, types
        assert [r["Time"] for r in everything] == sorted(r["Time"] for r in everything)
        # A station reports none of the audit events.
        station = rows(await history_events(opc, opc.nodeid("Fabrique/Stations"), start, end, writes_filter), write_fields)
        assert station == []
