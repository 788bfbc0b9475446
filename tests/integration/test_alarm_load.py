"""Alarm load against one asyncua session: a data subscription on many synthetic tags and an
event subscription on `Server`, while `simulation.synthetic.alarm_tags` limit alarms move
between High and HighHigh at `alarm_changes_hz` (README, "Alarms, events and history"; the
benchmark is server/benches/alarm_load.rs).

Every alarm change is an event, and none may be lost: the synthetic load changes its alarm
tags in turn (A000000, A000001, ... and round again), each change toggling the tag between
High and HighHigh, so the events of any window, in EventId order (the gateway's EventIds end
with a sequence number, taken as the change is made), must name the alarm tags in that cyclic
order with the levels alternating per tag. A lost event breaks the order. EventId order, not
arrival order: two publish responses may reach asyncua's callbacks swapped (seen once in six
runs under load), which OPC UA allows (a client orders NotificationMessages by sequence
number). The data subscription on the same session keeps every change of its tags (the value
encodes the round).
"""

from __future__ import annotations

import re

from asyncua import ua

from fabrique_testlib import connect, wait_for
from test_alarms import of_type

DATA_TAGS = 200
ALARM_TAGS = 50
ALARM_CHANGES_HZ = 100
# Three full rounds of the alarm tags after the first event received.
WINDOW = 3 * ALARM_TAGS
LOAD_ENV = {
    "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": str(DATA_TAGS),
    "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "10",
    "FABRIQUE__SIMULATION__SYNTHETIC__ALARM_TAGS": str(ALARM_TAGS),
    "FABRIQUE__SIMULATION__SYNTHETIC__ALARM_CHANGES_HZ": str(ALARM_CHANGES_HZ),
}
LOAD = "Fabrique/Stations/Synthetic/Load"
ALARM_SOURCE = re.compile(r"Stations/Synthetic/Load/A(\d{6})$")


class AlarmEvents:
    """(EventId, alarm tag index, message) of each synthetic limit alarm event."""

    def __init__(self):
        self.changes: list[tuple[bytes, int, str]] = []
        self.others = 0

    def event_notification(self, event):
        match = ALARM_SOURCE.match(str(event.SourceName))
        if match is None:
            self.others += 1
            return
        self.changes.append((event.EventId, int(match.group(1)), event.Message.Text))

    def window(self) -> list[tuple[int, str]]:
        """The first WINDOW changes after the first one received, in EventId order. The first
        is skipped: the subscription may have joined in the middle of a batch."""
        ordered = sorted(self.changes)
        return [(tag, message) for _, tag, message in ordered[1 : WINDOW + 1]]


def cycle_breaks(window: list[tuple[int, str]]) -> list[str]:
    """Where the window leaves the cyclic order of the alarm tags (an event lost)."""
    return [
        f"A{tag:06} then A{next_tag:06}"
        for (tag, _), (next_tag, _) in zip(window, window[1:])
        if next_tag != (tag + 1) % ALARM_TAGS
    ]


class DataChanges:
    def __init__(self):
        self.rounds: dict[str, list[int]] = {}

    def datachange_notification(self, node, value, data):
        # Synthetic values are round + index / tags: the integer part is the round.
        self.rounds.setdefault(node.nodeid.Identifier, []).append(int(value))


def base_fields(*names: str) -> list[ua.SimpleAttributeOperand]:
    """Select clauses for fields of BaseEventType, in this order."""
    return [
        ua.SimpleAttributeOperand(
            TypeDefinitionId=ua.NodeId(ua.ObjectIds.BaseEventType),
            BrowsePath=[ua.QualifiedName(name, 0)],
            AttributeId=ua.AttributeIds.Value,
        )
        for name in names
    ]


def level(message: str) -> str:
    """The level named by a limit alarm's message (`Synthetic alarm: HighHigh ...`)."""
    for name in ("HighHigh", "High"):
        if f": {name}" in message:
            return name
    raise AssertionError(f"no level in the message {message!r}")


async def test_every_alarm_change_reaches_an_event_subscription_beside_a_data_subscription(gateway_factory):
    gw = gateway_factory(name="alarm-load", env=LOAD_ENV)
    async with connect(gw) as opc:
        data = DataChanges()
        data_sub = await opc.client.create_subscription(100, data)
        tags = [opc.node(f"{LOAD}/T{i:06}") for i in range(DATA_TAGS)]
        await data_sub.subscribe_data_change(tags, queuesize=50)

        alarms = AlarmEvents()
        event_sub = await opc.client.create_subscription(100, alarms)
        limit_type = opc.client.get_node(ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType))
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = base_fields("EventId", "SourceName", "Message", "Time")
        evfilter.WhereClause = of_type(limit_type.nodeid)
        await event_sub.subscribe_events(opc.client.get_node(ua.ObjectIds.Server), limit_type, evfilter, queuesize=100)

        # Complete once every change of the window has arrived (a response delayed behind a
        # later one included); a lost event never completes it.
        def complete() -> bool:
            return len(alarms.changes) > WINDOW and not cycle_breaks(alarms.window())

        await wait_for(
            complete,
            120,
            what=lambda: f"{WINDOW} alarm changes without a gap (got {len(alarms.changes)}; breaks: {cycle_breaks(alarms.window())[:5]})",
        )
        window = alarms.window()
        levels: dict[int, list[str]] = {}
        for tag, message in window:
            levels.setdefault(tag, []).append(level(message))
        assert sorted(levels) == list(range(ALARM_TAGS))
        for tag, seen in levels.items():
            assert all(a != b for a, b in zip(seen, seen[1:])), f"A{tag:06} did not alternate: {seen}"

        # The data subscription kept every round of every tag meanwhile (polled: a response
        # may arrive behind a later one, as above).
        def data_gaps() -> list[str]:
            if len(data.rounds) < DATA_TAGS:
                return [f"{len(data.rounds)} of {DATA_TAGS} tags reported"]
            out = []
            for tag, rounds in data.rounds.items():
                seen = sorted(rounds)
                if len(seen) <= 10:
                    out.append(f"{tag}: only {len(seen)} changes")
                out += [f"{tag}: {a} then {b}" for a, b in zip(seen, seen[1:]) if b != a + 1]
            return out

        await wait_for(lambda: not data_gaps(), 30, what=lambda: f"every data change: {data_gaps()[:5]}")


class AllEvents:
    def __init__(self):
        self.events = []

    def event_notification(self, event):
        self.events.append(event)


async def test_an_event_item_whose_queue_overflows_gets_an_event_queue_overflow_event(gateway_factory):
    """OPC UA Part 4, 5.13.1.5: an event item that has to discard events gets an
    EventQueueOverflowEventType event (source `Server`, SourceName
    `Internal/EventQueueOverflow`), past its where clause; events are not lost silently.
    Here a queue of 5 and one publish a second, against 100 alarm changes a second."""
    gw = gateway_factory(name="event-overflow", env=LOAD_ENV)
    async with connect(gw) as opc:
        got = AllEvents()
        sub = await opc.client.create_subscription(1000, got)
        limit_type = opc.client.get_node(ua.NodeId(ua.ObjectIds.ExclusiveLimitAlarmType))
        evfilter = ua.EventFilter()
        evfilter.SelectClauses = base_fields("EventId", "EventType", "SourceNode", "SourceName", "Message")
        # Only limit alarms pass the where clause; the overflow event bypasses it.
        evfilter.WhereClause = of_type(limit_type.nodeid)
        await sub.subscribe_events(opc.client.get_node(ua.ObjectIds.Server), limit_type, evfilter, queuesize=5)

        overflow_type = ua.NodeId(ua.ObjectIds.EventQueueOverflowEventType)

        def overflows():
            return [e for e in got.events if e.EventType == overflow_type]

        await wait_for(overflows, 60, what="an EventQueueOverflowEventType event")
        overflow = overflows()[0]
        assert overflow.SourceNode == ua.NodeId(ua.ObjectIds.Server)
        assert overflow.SourceName == "Internal/EventQueueOverflow"
        assert overflow.EventId
        # The limit alarms kept coming beside it.
        assert any(ALARM_SOURCE.match(str(e.SourceName)) for e in got.events)
