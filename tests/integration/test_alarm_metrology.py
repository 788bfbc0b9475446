"""The metrology NOK alarm end to end, against the simulated truck: a part scrapped at
metrology raises the line's `Metrology` OffNormalAlarm, which an asyncua alarm subscription on
the line (and one on `Server`) receives, with the scrapped order's PartScrappedEventType; the
operator acknowledges it. The NOK is made on demand with the simulator's own knob,
`simulation.defect_rate = 1` (every part comes out of tolerance): no mock. README, "Alarms and
Conditions".
"""

from __future__ import annotations

from asyncua import ua
from asyncua.common.events import select_clauses_from_evtype

from fabrique_testlib import connect, wait_for
from test_alarms import condition_id_through_base_event_type, of_type
from test_events import Collector

PART_SCRAPPED = 5003
EVERY_PART_NOK = {"FABRIQUE__SIMULATION__DEFECT_RATE": "1"}


async def test_a_scrapped_part_raises_the_metrology_alarm_seen_by_an_event_subscription(gateway_factory):
    gw = gateway_factory(name="metrology-nok", env=EVERY_PART_NOK)
    async with connect(gw) as opc:
        off_normal = opc.client.get_node(ua.NodeId(ua.ObjectIds.OffNormalAlarmType))
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = condition_id_through_base_event_type(await select_clauses_from_evtype([off_normal]))
        evfilter.WhereClause = of_type(off_normal.nodeid)
        on_line, on_server = Collector(), Collector()
        for collector, notifier in [(on_line, opc.node("Fabrique/Line")), (on_server, opc.client.get_node(ua.ObjectIds.Server))]:
            sub = await opc.client.create_subscription(50, collector)
            await sub.subscribe_alarms_and_conditions(notifier, off_normal, evfilter, queuesize=100)
        scrapped_type = opc.client.get_node(ua.NodeId(PART_SCRAPPED, opc.types))
        scraps = Collector()
        sub = await opc.client.create_subscription(50, scraps)
        scrap_filter = ua.EventFilter()
        scrap_filter.SelectClauses = await select_clauses_from_evtype([scrapped_type])
        scrap_filter.WhereClause = of_type(scrapped_type.nodeid)
        await sub.subscribe_events(opc.node("Fabrique/Line"), scrapped_type, scrap_filter, queuesize=100)

        submitted = await opc.submit_order("Classic", "NOK")
        assert submitted.StatusCode.is_good(), submitted.StatusCode
        order_id = submitted.OutputArguments[0].Value

        def metrology(collector):
            return [e for e in collector.events if getattr(e, "ConditionName", None) == "Metrology"]

        # The order goes through the line (speed 50) and out of tolerance at metrology.
        await wait_for(lambda: metrology(on_line), 90, what=f"the metrology alarm for {order_id}")
        raised = metrology(on_line)[0]
        fields = raised.get_event_props_as_fields_dict()
        assert raised.EventType == off_normal.nodeid
        assert raised.NodeId == opc.nodeid("Fabrique/Line/Alarms/Metrology")
        assert raised.SourceNode == opc.nodeid("Fabrique/Line")
        assert fields["ActiveState/Id"].Value is True
        assert fields["AckedState/Id"].Value is False
        assert raised.Retain is True
        assert raised.Severity == 600
        assert f"Order {order_id} scrapped at metrology" in raised.Message.Text, raised.Message.Text
        # The part's own event, with its verdict.
        await wait_for(lambda: scraps.events, 15, what="the PartScrappedEventType")
        scrap = scraps.events[0]
        assert scrap.OrderId == order_id
        assert scrap.Verdict, scrap
        # A subscription on Server sees the same alarm (same EventId).
        await wait_for(lambda: metrology(on_server), 15, what="the metrology alarm on Server")
        assert metrology(on_server)[0].EventId == raised.EventId

        # The operator acknowledges it; the alarm stays active until a good part.
        acknowledge = ua.NodeId(ua.ObjectIds.AcknowledgeableConditionType_Acknowledge)
        await opc.client.get_node(raised.NodeId).call_method(acknowledge, raised.EventId, ua.LocalizedText("gauge recalibrated", "en"))
        await wait_for(lambda: len(metrology(on_line)) >= 2, 15, what="the acknowledgement reported")
        acked = metrology(on_line)[1].get_event_props_as_fields_dict()
        assert acked["AckedState/Id"].Value is True
        assert acked["ActiveState/Id"].Value is True
        assert metrology(on_line)[1].Comment.Text == "gauge recalibrated"


async def test_the_next_good_part_returns_the_metrology_alarm_to_normal(gateway_factory):
    """Raised with every part NOK; then the defect rate goes back to 0 (a restart with the
    changed configuration: `simulation.defect_rate` is not applied by a reload) and the next
    part delivered ends the condition: an event with ActiveState false, still retained until
    it is acknowledged. The raised state survives the restart (the alarm state file)."""
    from test_alarms_north import call

    off_normal_id = ua.NodeId(ua.ObjectIds.OffNormalAlarmType)

    async def subscribe_line(opc) -> Collector:
        off_normal = opc.client.get_node(off_normal_id)
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = condition_id_through_base_event_type(await select_clauses_from_evtype([off_normal]))
        evfilter.WhereClause = of_type(off_normal_id)
        on_line = Collector()
        sub = await opc.client.create_subscription(50, on_line)
        await sub.subscribe_alarms_and_conditions(opc.node("Fabrique/Line"), off_normal, evfilter, queuesize=100)
        return on_line

    def metrology(collector, active: bool):
        return [
            e
            for e in collector.events
            if getattr(e, "ConditionName", None) == "Metrology" and e.get_event_props_as_fields_dict()["ActiveState/Id"].Value is active
        ]

    gw = gateway_factory(name="metrology-back", env=EVERY_PART_NOK)
    async with connect(gw) as opc:
        on_line = await subscribe_line(opc)
        submitted = await opc.submit_order("Classic", "NOK")
        assert submitted.StatusCode.is_good(), submitted.StatusCode
        await wait_for(lambda: metrology(on_line, True), 90, what="the metrology alarm raised")
        raised = metrology(on_line, True)[0]
    gw.stop()

    gw = gateway_factory(name="metrology-back", env={"FABRIQUE__SIMULATION__DEFECT_RATE": "0"})
    status, body = await call(gw, "GET", "/api/alarms")
    assert [(a["id"], a["active"]) for a in body["active"] if a["condition"] == "Metrology"] == [("Line/Metrology", True)], body
    async with connect(gw) as opc:
        on_line = await subscribe_line(opc)
        submitted = await opc.submit_order("Classic", "OK again")
        assert submitted.StatusCode.is_good(), submitted.StatusCode
        order_id = submitted.OutputArguments[0].Value
        await wait_for(lambda: metrology(on_line, False), 90, what=f"the metrology alarm back to normal with {order_id}")
        cleared = metrology(on_line, False)[0]
        fields = cleared.get_event_props_as_fields_dict()
        assert cleared.EventType == off_normal_id
        assert cleared.NodeId == opc.nodeid("Fabrique/Line/Alarms/Metrology")
        assert cleared.SourceNode == opc.nodeid("Fabrique/Line")
        assert cleared.SourceName == "Line"
        assert cleared.Severity == 600
        assert f"Order {order_id} delivered: metrology OK again" == cleared.Message.Text, cleared.Message.Text
        assert fields["AckedState/Id"].Value is False
        # Inactive but not acknowledged: still in the alarm list (Part 9's Retain).
        assert cleared.Retain is True
        assert cleared.EventId != raised.EventId
        assert cleared.Time > raised.Time
    status, body = await call(gw, "GET", "/api/alarms")
    listed = [a for a in body["active"] if a["condition"] == "Metrology"]
    assert [(a["active"], a["acked"], a["retain"]) for a in listed] == [(False, False, True)], body
