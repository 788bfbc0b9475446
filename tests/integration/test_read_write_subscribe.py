"""Reads, writes (accepted and refused) and data-change subscriptions."""

from __future__ import annotations

import re

import pytest
from asyncua import ua

from fabrique_testlib import WRITABLE_TAGS, Recorder, status_name, wait_for

NOZZLE = "Fabrique/Stations/Printing/Printer3D/NozzleTemperature"
JOINT1 = "Fabrique/Stations/Assembly/Cobot/Joint1"
SPEED_SETPOINT = "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint"


def double(x: float) -> ua.Variant:
    return ua.Variant(x, ua.VariantType.Double)


async def write_and_wait(opc, path: str, value: float) -> None:
    code = await opc.write_status(path, double(value))
    assert code.is_good(), f"writing {value} to {path}: {status_name(code)}"

    async def reads_back():
        return await opc.read(path) == value

    await wait_for(reads_back, 5, what=f"{path} to read back {value}")


async def test_read_process_values(opc):
    nozzle = await opc.read(NOZZLE)
    assert isinstance(nozzle, float) and 0.0 <= nozzle <= 300.0, nozzle
    joint = await opc.read(JOINT1)
    assert isinstance(joint, float) and -360.0 <= joint <= 360.0, joint
    assert isinstance(await opc.read("Fabrique/Stations/Logistics/ConveyorPlc/Running"), bool)
    dv = await opc.node(NOZZLE).read_data_value()
    assert dv.StatusCode.is_good()
    assert dv.SourceTimestamp is not None or dv.ServerTimestamp is not None


async def test_write_in_range_reads_back(opc):
    assert await opc.read(SPEED_SETPOINT) == 12.0, "default conveyor speed setpoint"
    try:
        await write_and_wait(opc, SPEED_SETPOINT, 20.5)
        dv = await opc.node(SPEED_SETPOINT).read_data_value()
        assert dv.Value.VariantType == ua.VariantType.Double
        assert dv.StatusCode.is_good()
    finally:
        await write_and_wait(opc, SPEED_SETPOINT, 12.0)


async def test_write_out_of_range_is_refused(opc):
    before = await opc.read(SPEED_SETPOINT)
    for value in (99.0, -1.0, 30.5):
        code = await opc.write_status(SPEED_SETPOINT, double(value))
        assert code.value == ua.StatusCodes.BadOutOfRange, f"writing {value}: got {status_name(code)}"
        assert await opc.read(SPEED_SETPOINT) == before
    # The boundary itself is in range.
    try:
        await write_and_wait(opc, SPEED_SETPOINT, 30.0)
    finally:
        await write_and_wait(opc, SPEED_SETPOINT, before)


async def test_write_wrong_type_is_refused(opc):
    before = await opc.read(SPEED_SETPOINT)
    code = await opc.write_status(SPEED_SETPOINT, ua.Variant("fast", ua.VariantType.String))
    assert code.value == ua.StatusCodes.BadTypeMismatch, f"got {status_name(code)}"
    assert await opc.read(SPEED_SETPOINT) == before


@pytest.mark.parametrize(
    "path, variant",
    [
        (NOZZLE, double(100.0)),
        ("Fabrique/Line/State", ua.Variant("Stopped", ua.VariantType.String)),
        ("Fabrique/Orders/Submitted", ua.Variant(5, ua.VariantType.UInt32)),
    ],
)
async def test_write_read_only_tag_is_refused(opc, path, variant):
    before = await opc.read(path) if path != NOZZLE else None
    code = await opc.write_status(path, variant)
    assert code.value in (ua.StatusCodes.BadNotWritable, ua.StatusCodes.BadUserAccessDenied), (
        f"writing {path}: got {status_name(code)}"
    )
    if before is not None:
        assert await opc.read(path) == before


@pytest.mark.parametrize("path", sorted(set(WRITABLE_TAGS) - {SPEED_SETPOINT}))
async def test_other_setpoints_accept_in_range_and_refuse_out_of_range(opc, path):
    low, high = WRITABLE_TAGS[path]
    before = await opc.read(path)
    assert isinstance(before, float) and low <= before <= high
    target = round((low + high) / 2 + 1.25, 2)
    try:
        await write_and_wait(opc, path, target)
        for bad in (high + 1.0, low - 1.0):
            code = await opc.write_status(path, double(bad))
            assert code.value == ua.StatusCodes.BadOutOfRange, f"writing {bad} to {path}: {status_name(code)}"
        assert await opc.read(path) == target
    finally:
        await write_and_wait(opc, path, before)


async def test_subscription_reports_changing_values(opc):
    """NozzleTemperature (sensor noise) changes at once; Cobot/Joint1 moves while a part is
    assembled (step 7), so an order is placed to make the cobot work."""
    recorder = Recorder(opc)
    sub = await opc.client.create_subscription(100, recorder)
    try:
        handles = await sub.subscribe_data_change(
            [opc.node(NOZZLE), opc.node(JOINT1)], queuesize=10, sampling_interval=100
        )
        assert all(isinstance(h, int) for h in handles), f"monitored items refused: {handles}"

        def distinct(path):
            return len({v for v in recorder.values(path) if v is not None})

        await wait_for(lambda: distinct(NOZZLE) >= 3, 10, what=lambda: f"NozzleTemperature changes: {recorder.values(NOZZLE)}")

        result = await opc.submit_order("Classic", "Cobot")
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        assert re.fullmatch(r"ORD-\d{6}", result.OutputArguments[0].Value)

        await wait_for(lambda: distinct(JOINT1) >= 3, 45, what=lambda: f"Joint1 changes: {recorder.values(JOINT1)[-20:]}")
        for path in (NOZZLE, JOINT1):
            for p, v, dv in recorder.events:
                if p == path:
                    assert dv.StatusCode is None or dv.StatusCode.is_good(), f"{path}: {status_name(dv.StatusCode)}"
                    assert isinstance(v, float)
    finally:
        await sub.delete()
