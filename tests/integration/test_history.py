"""The embedded historian, read back with asyncua's HistoryRead: raw (continuation points,
bounds, reverse order), at time, processed aggregates; survives a kill -9; bad requests get
the standard status codes.

The gateway runs two synthetic tags at 10 Hz: `T000000` is the round number (+1 every 100 ms),
so a gap in what the history returns is a missing value.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal

import pytest
from asyncua import ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, connect, status_name, wait_for

COUNTER = "Fabrique/Stations/Synthetic/Load/T000000"
ENV = {
    **FAST_SIMULATION_ENV,
    "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "2",
    "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "10",
    # Seal often, so reads cross sealed segments, the chunks being sealed and open ones.
    "FABRIQUE__HISTORY__SEAL_INTERVAL_S": "5",
}


NULL_TIME = dt.datetime(1601, 1, 1)


@pytest.fixture(scope="module")
def historian(gateway_bin, tmp_path_factory):
    gw = start_gateway(gateway_bin, tmp_path_factory.mktemp("history"), ENV, "history")
    yield gw
    stop_gateway(gw)


def utc(t: dt.datetime) -> dt.datetime:
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


async def history_read(opc, nodeid, details, cp: bytes = b"", timestamps=ua.TimestampsToReturn.Source):
    params = ua.HistoryReadParameters()
    params.HistoryReadDetails = details
    params.TimestampsToReturn = timestamps
    params.ReleaseContinuationPoints = False
    item = ua.HistoryReadValueId()
    item.NodeId = nodeid
    item.ContinuationPoint = cp
    params.NodesToRead = [item]
    return (await opc.client.uaclient.history_read(params))[0]


def raw(start, end, n=0, bounds=False) -> ua.ReadRawModifiedDetails:
    d = ua.ReadRawModifiedDetails()
    d.IsReadModified = False
    # OPC UA's null time (the 1601 epoch) stands for "not given".
    d.StartTime = start or NULL_TIME
    d.EndTime = end or NULL_TIME
    d.NumValuesPerNode = n
    d.ReturnBounds = bounds
    return d


def processed(start, end, interval_ms, aggregate: int) -> ua.ReadProcessedDetails:
    d = ua.ReadProcessedDetails()
    d.StartTime = start
    d.EndTime = end
    d.ProcessingInterval = interval_ms
    d.AggregateType = [ua.NodeId(aggregate, 0)]
    d.AggregateConfiguration = ua.AggregateConfiguration(UseServerCapabilitiesDefaults=True)
    return d


async def read_all_raw(opc, nodeid, start, end, n):
    """Follow continuation points; returns (values, calls)."""
    values, cp, calls = [], b"", 0
    while True:
        result = await history_read(opc, nodeid, raw(start, end, n), cp)
        calls += 1
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        page = result.HistoryData.DataValues or []
        assert len(page) <= n
        values.extend(page)
        cp = result.ContinuationPoint
        if not cp:
            return values, calls


async def counter_now(opc) -> tuple[int, dt.datetime]:
    dv = await opc.node(COUNTER).read_data_value()
    return int(dv.Value.Value), utc(dv.SourceTimestamp)


async def enough_history(opc, seconds: float) -> None:
    """Wait until the counter has run for `seconds` (it counts 10 rounds a second from 1)."""

    async def counted():
        return (await counter_now(opc))[0] > seconds * 10

    await wait_for(counted, seconds + 30, interval=0.5, what=f"{seconds} s of history")


async def test_historized_variables_say_so(historian):
    async with connect(historian) as opc:
        node = opc.client.get_node(opc.nodeid(COUNTER))
        historizing = (await node.read_attribute(ua.AttributeIds.Historizing)).Value.Value
        access = (await node.read_attribute(ua.AttributeIds.AccessLevel)).Value.Value
        user_access = (await node.read_attribute(ua.AttributeIds.UserAccessLevel)).Value.Value
        assert historizing is True
        assert access & ua.AccessLevel.HistoryRead.mask
        assert user_access & ua.AccessLevel.HistoryRead.mask


async def test_every_value_of_a_10_hz_tag_over_a_minute_with_continuation_points(historian):
    async with connect(historian) as opc:
        _, first_time = await counter_now(opc)
        start = first_time + dt.timedelta(seconds=1)
        # A minute of history, and a little more: T000000 counts rounds at 10 Hz.
        async def a_minute_later():
            return (await counter_now(opc))[1] >= start + dt.timedelta(seconds=61)

        await wait_for(a_minute_later, 90, interval=1, what="a minute of history")
        end = start + dt.timedelta(seconds=60)
        values, calls = await read_all_raw(opc, opc.nodeid(COUNTER), start, end, 100)
        counts = [int(v.Value.Value) for v in values]
        times = [utc(v.SourceTimestamp) for v in values]
        # The counter counts rounds (a loaded machine may skip a tick): every round is there,
        # and the bounds just outside the window are the rounds before and after it.
        assert len(counts) > 100 and calls == (len(counts) + 99) // 100, (calls, len(counts))
        assert counts == list(range(counts[0], counts[0] + len(counts))), "a gap in the raw history"
        assert all(start <= t < end for t in times)
        assert times == sorted(times)

        # Bounds: the value at or before the start, then the one at or after the end.
        result = await history_read(opc, opc.nodeid(COUNTER), raw(start, end, 0, bounds=True))
        bounded = [int(v.Value.Value) for v in result.HistoryData.DataValues]
        assert bounded[1:-1] == counts or bounded[:-1] == counts
        assert bounded[0] in (counts[0] - 1, counts[0])
        assert bounded[-1] == counts[-1] + 1

        # End before start: the same values, newest first.
        values, _ = await read_all_raw(opc, opc.nodeid(COUNTER), end, start, 250)
        assert [int(v.Value.Value) for v in values] == list(reversed(counts))[: len(values)]
        assert len(values) == len(counts)

        # Only a start and a number: the first values from there.
        result = await history_read(opc, opc.nodeid(COUNTER), raw(start, None, 10))
        assert [int(v.Value.Value) for v in result.HistoryData.DataValues] == counts[:10]


async def test_processed_aggregates_equal_a_recomputation_from_raw(historian):
    async with connect(historian) as opc:
        await enough_history(opc, 15)
        _, now = await counter_now(opc)
        start = now - dt.timedelta(seconds=12)
        end = start + dt.timedelta(seconds=10)
        raw_values, _ = await read_all_raw(opc, opc.nodeid(COUNTER), start, end, 1000)
        points = [(utc(v.SourceTimestamp), float(v.Value.Value)) for v in raw_values]
        expected = {}
        for k in range(10):
            lo, hi = start + dt.timedelta(seconds=k), start + dt.timedelta(seconds=k + 1)
            inside = [v for t, v in points if lo <= t < hi]
            expected[lo] = inside
        for aggregate, compute in [
            (ua.ObjectIds.AggregateFunction_Average, lambda xs: sum(xs) / len(xs)),
            (ua.ObjectIds.AggregateFunction_Minimum, min),
            (ua.ObjectIds.AggregateFunction_Maximum, max),
            (ua.ObjectIds.AggregateFunction_Count, len),
        ]:
            result = await history_read(opc, opc.nodeid(COUNTER), processed(start, end, 1000, aggregate))
            assert result.StatusCode.is_good(), status_name(result.StatusCode)
            got = result.HistoryData.DataValues
            assert len(got) == 10
            for dv in got:
                inside = expected[utc(dv.SourceTimestamp)]
                assert dv.StatusCode.is_good()
                assert dv.Value.Value == pytest.approx(compute(inside)), aggregate
        # TimeAverage of a counter rising by 1 every 0.1 s: the mean of the line through it,
        # within a step of the plain average; Total is TimeAverage × 1 s.
        result = await history_read(
            opc, opc.nodeid(COUNTER), processed(start, end, 1000, ua.ObjectIds.AggregateFunction_TimeAverage)
        )
        averages = [dv.Value.Value for dv in result.HistoryData.DataValues]
        result = await history_read(
            opc, opc.nodeid(COUNTER), processed(start, end, 1000, ua.ObjectIds.AggregateFunction_Total)
        )
        totals = [dv.Value.Value for dv in result.HistoryData.DataValues]
        assert totals == pytest.approx(averages)
        for average, lo in zip(averages, sorted(expected)):
            inside = expected[lo]
            assert abs(average - sum(inside) / len(inside)) <= 1.0
        # Interpolative at each interval start lies between the values around it.
        result = await history_read(
            opc, opc.nodeid(COUNTER), processed(start, end, 1000, ua.ObjectIds.AggregateFunction_Interpolative)
        )
        for dv in result.HistoryData.DataValues:
            t = utc(dv.SourceTimestamp)
            before = max(v for s, v in points if s <= t) if any(s <= t for s, _ in points) else None
            if before is not None:
                assert before <= dv.Value.Value <= before + 1


async def test_at_time_returns_stored_or_interpolated_values(historian):
    async with connect(historian) as opc:
        await enough_history(opc, 6)
        _, now = await counter_now(opc)
        start, end = now - dt.timedelta(seconds=5), now - dt.timedelta(seconds=3)
        values, _ = await read_all_raw(opc, opc.nodeid(COUNTER), start, end, 1000)
        exact = utc(values[3].SourceTimestamp)
        between = exact + (utc(values[4].SourceTimestamp) - exact) / 2
        d = ua.ReadAtTimeDetails()
        d.ReqTimes = [exact, between, dt.datetime(2001, 1, 1)]
        d.UseSimpleBounds = True
        result = await history_read(opc, opc.nodeid(COUNTER), d)
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        a, b, c = result.HistoryData.DataValues
        # Python's datetimes stop at microseconds, the history keeps 100 ns: nearly exact.
        assert a.Value.Value == pytest.approx(values[3].Value.Value, abs=1e-3)
        assert b.Value.Value == pytest.approx((values[3].Value.Value + values[4].Value.Value) / 2, abs=1e-3)
        assert status_name(c.StatusCode) == "BadNoData"


async def test_bad_requests_get_standard_status_codes(historian):
    async with connect(historian) as opc:
        counter = opc.nodeid(COUNTER)
        _, now = await counter_now(opc)
        hour_ago = now - dt.timedelta(hours=1)

        async def status(nodeid, details, cp=b""):
            return status_name((await history_read(opc, nodeid, details, cp)).StatusCode)

        assert await status(counter, raw(None, None, 10)) == "BadInvalidTimestampArgument"
        assert await status(counter, raw(hour_ago, None, 0)) == "BadInvalidTimestampArgument"
        modified = raw(hour_ago, now)
        modified.IsReadModified = True
        assert await status(counter, modified) == "BadHistoryOperationUnsupported"
        assert await status(ua.NodeId("Fabrique/NoSuchTag", opc.inst), raw(hour_ago, now)) == "BadNodeIdUnknown"
        # A variable that is not historized has no HistoryRead access bit.
        assert await status(opc.nodeid("Fabrique/Name"), raw(hour_ago, now)) in (
            "BadUserAccessDenied",
            "BadHistoryOperationUnsupported",
        )
        assert await status(counter, raw(hour_ago, now), cp=b"forged") == "BadContinuationPointInvalid"
        # Processed: an unknown aggregate, a reversed empty range, millions of intervals.
        assert (
            await status(counter, processed(hour_ago, now, 1000, ua.ObjectIds.AggregateFunction_StandardDeviationSample))
            == "BadAggregateNotSupported"
        )
        assert await status(counter, processed(now, now, 1000, ua.ObjectIds.AggregateFunction_Average)) == (
            "BadInvalidTimestampArgument"
        )
        year_ago = now - dt.timedelta(days=365)
        assert (
            await status(counter, processed(year_ago, now, 1, ua.ObjectIds.AggregateFunction_Average))
            == "BadTooManyOperations"
        )
        # A huge raw request is answered in pages, with a continuation point.
        result = await history_read(opc, counter, raw(year_ago, now + dt.timedelta(days=1), 0))
        assert result.StatusCode.is_good()
        # And the gateway still serves normal reads.
        values, _ = await read_all_raw(opc, counter, now - dt.timedelta(seconds=2), now, 100)
        assert values


async def test_history_survives_a_kill_9(gateway_factory):
    gw = gateway_factory(ENV, name="history-kill")
    async with connect(gw) as opc:
        async def counted():
            return (await counter_now(opc))[0] > 30

        await wait_for(counted, 30, what="30 rounds")
        first, _ = await counter_now(opc)
    # Everything older than the flush interval (1 s) must be on disk.
    await asyncio.sleep(1.5)
    async with connect(gw) as opc:
        last_known, _ = await counter_now(opc)
    await asyncio.sleep(1.5)
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(timeout=10)
    gw.stop()
    again = gateway_factory(ENV, name="history-kill")
    assert again.data_dir == gw.data_dir
    async with connect(again) as opc:
        end = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        values, _ = await read_all_raw(opc, opc.nodeid(COUNTER), end - dt.timedelta(minutes=10), end, 1000)
        counts = [int(v.Value.Value) for v in values]
        # The first run's counter, from its start (1) to at least `last_known`, without a gap.
        run = counts[: counts.index(1, 1)] if 1 in counts[1:] else counts
        assert run[0] <= first
        assert run[-1] >= last_known, (run[-1], last_known)
        assert run == list(range(run[0], run[0] + len(run)))
    log = again.log_path.read_text(errors="replace")
    assert "last run's write-ahead log sealed" in log
