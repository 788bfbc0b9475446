"""Modbus TCP adapter against a real pymodbus server, checked through the gateway's OPC UA server.

The peer (peer_modbus.py) serves the same logical values on units 1, 2 and 3 in three word and
byte orders, a block of 200 registers on unit 4 for the coalescing check, and a second peer
process is killed and restarted for the reconnection scenario.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
from pathlib import Path

import pytest
from asyncua import ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, clean_env, connect, status_name, wait_for
from peer_modbus import COALESCE_REGISTERS, COALESCE_UNIT, LAYOUT, ORDERS, PeerProcess, decode, encode

STATION = "Partners"
DEVICES = {1: "press", 2: "press_cdab", 3: "press_le"}
BULK_POLL_MS = 100

VARIANTS = {
    "bool": ua.VariantType.Boolean,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "int64": ua.VariantType.Int64,
    "uint64": ua.VariantType.UInt64,
    "float32": ua.VariantType.Float,
    "float64": ua.VariantType.Double,
    "string": ua.VariantType.String,
}


def path(device: str, tag: str) -> str:
    return f"Fabrique/Stations/{STATION}/{device}/{tag}"


def toml_value(v) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def device_block(name: str, port: int, unit: int, tags: list[tuple[str, str, str, dict]],
                 **options) -> str:
    lines = ["[[devices]]", f'name = "{name}"', f'station = "{STATION}"', 'protocol = "modbus"',
             f'address = "127.0.0.1:{port}"', f"unit = {unit}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
    for tag, register, data_type, extra in tags:
        lines += ["", "  [[devices.tags]]", f'  name = "{tag}"', f'  register = "{register}"',
                  f'  type = "{data_type}"']
        lines += [f"  {k} = {toml_value(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


def expected(data_type: str, value, extra: dict):
    """The engineering value and the variant type the gateway should show."""
    if "scale" in extra or "offset" in extra:
        return value * extra.get("scale", 1.0) + extra.get("offset", 0.0), ua.VariantType.Double
    if data_type == "bool":
        return bool(value), ua.VariantType.Boolean
    return value, VARIANTS[data_type]


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    logs = tmp_path_factory.mktemp("modbus-peers")
    main = PeerProcess(logs / "peer-main.log")
    spare = PeerProcess(logs / "peer-restart.log")
    main.start()
    spare.start()
    yield main, spare
    main.kill()
    spare.kill()


@pytest.fixture(scope="module")
def modbus_gateway(gateway_bin, tmp_path_factory, peers):
    main, spare = peers
    work = tmp_path_factory.mktemp("modbus-gateway")
    layout = [(n, r, t, x) for n, r, t, _, x in LAYOUT]
    text = ""
    for unit, name in DEVICES.items():
        word, byte = ORDERS[unit]
        tags = layout + ([("Missing", "holding:1000", "uint16", {"access": "readwrite"})] if unit == 1 else [])
        text += device_block(name, main.port, unit, tags, poll_ms=200, word_order=word,
                             byte_order=byte)
    bulk = [(f"R{i:03}", f"holding:{i}", "uint16", {}) for i in range(COALESCE_REGISTERS)]
    bulk.append(("In0", "input:0", "uint16", {}))
    text += device_block("bulk", main.port, COALESCE_UNIT, bulk, poll_ms=BULK_POLL_MS)
    feeder = [(n, r, t, x) for n, r, t, x in layout if n in ("I16", "Pressure", "Running")]
    text += device_block("feeder", spare.port, 1, feeder, poll_ms=200, timeout_ms=500)
    config = work / "modbus.toml"
    config.write_text(text, encoding="utf-8")
    gw = start_gateway(gateway_bin, work, FAST_SIMULATION_ENV, "modbus",
                       args=["--config", str(config)])
    yield gw
    stop_gateway(gw)


@pytest.fixture
async def opc(modbus_gateway):
    async with connect(modbus_gateway) as o:
        yield o


async def good(opc, paths: list[str]) -> bool:
    return all(dv.StatusCode.is_good() for dv in await opc.read_many(paths))


async def wait_all_good(opc, device: str, tags: list[str], timeout: float = 20):
    paths = [path(device, t) for t in tags]
    await wait_for(lambda: good(opc, paths), timeout, what=f"{device} tags Good")


async def test_every_type_table_and_order_reads_correctly(opc):
    names = [n for n, *_ in LAYOUT]
    for unit, device in DEVICES.items():
        await wait_all_good(opc, device, names)
        values = await opc.read_many([path(device, n) for n in names])
        for (name, _reg, data_type, value, extra), dv in zip(LAYOUT, values):
            want, variant = expected(data_type, value, extra)
            where = f"{device}/{name} ({ORDERS[unit]})"
            assert dv.Value.VariantType == variant, where
            if isinstance(want, float):
                assert math.isclose(dv.Value.Value, want, rel_tol=1e-6), (where, dv.Value.Value)
            else:
                assert dv.Value.Value == want, (where, dv.Value.Value)
    assert await opc.read(path("press", "Label")) == "PRESS-01"
    assert await opc.read(path("press", "Status/Connected")) is True
    assert await opc.read(path("press", "Status/RequestsOk")) > 0
    assert await opc.read(path("press", "Status/LastReadTime")) is not None


async def test_writes_reach_the_device_and_read_back(opc, peers):
    main, _ = peers
    await wait_all_good(opc, "press", ["Pressure", "Setpoint", "Start"])

    status = await opc.write_status(path("press", "Pressure"), ua.Variant(42.25, ua.VariantType.Float))
    assert status.is_good(), status_name(status)
    assert decode("float32", main.get(1, 3, 14, 2)) == 42.25
    assert await opc.read(path("press", "Pressure")) == 42.25

    # Same tag on the little-word device: the two registers go out swapped.
    status = await opc.write_status(path("press_cdab", "Pressure"), ua.Variant(7.5, ua.VariantType.Float))
    assert status.is_good(), status_name(status)
    assert decode("float32", main.get(2, 3, 14, 2), "little", "big") == 7.5

    # int16 with scale 0.1: 12.34 is stored as 123 and reads back as 12.3.
    status = await opc.write_status(path("press", "Setpoint"), ua.Variant(12.34, ua.VariantType.Double))
    assert status.is_good(), status_name(status)
    assert decode("int16", main.get(1, 3, 20, 1)) == 123
    assert math.isclose(await opc.read(path("press", "Setpoint")), 12.3, rel_tol=1e-9)

    status = await opc.write_status(path("press", "Start"), ua.Variant(True, ua.VariantType.Boolean))
    assert status.is_good(), status_name(status)
    assert main.get(1, 1, 1, 1) == [1]
    assert await opc.read(path("press", "Start")) is True
    # Still true after a few more polls: the device holds it.
    await asyncio.sleep(0.5)
    assert await opc.read(path("press", "Start")) is True


async def test_out_of_range_writes_are_refused_and_nothing_is_written(opc, peers):
    main, _ = peers
    await wait_all_good(opc, "press", ["Setpoint", "Speed", "Pressure"])
    before = main.get(1, 3, 14, 8)
    # Outside the configured range.
    status = await opc.write_status(path("press", "Setpoint"), ua.Variant(150.0, ua.VariantType.Double))
    assert status_name(status) == "BadOutOfRange"
    status = await opc.write_status(path("press", "Pressure"), ua.Variant(300.0, ua.VariantType.Float))
    assert status_name(status) == "BadOutOfRange"
    # No range, but uint16 raw with scale 2, offset -10 cannot hold 200000.
    status = await opc.write_status(path("press", "Speed"), ua.Variant(200000.0, ua.VariantType.Double))
    assert status_name(status) == "BadOutOfRange"
    status = await opc.write_status(path("press", "Speed"), ua.Variant(-20.0, ua.VariantType.Double))
    assert status_name(status) == "BadOutOfRange"
    # Read-only input register.
    status = await opc.write_status(path("press", "Flow"), ua.Variant(1.0, ua.VariantType.Float))
    assert status.is_bad()
    assert main.get(1, 3, 14, 8) == before
    assert main.get(1, 4, 0, 2) == encode("float32", 100.5)


async def test_an_exception_reply_turns_only_its_tags_bad(opc):
    missing = path("press", "Missing")

    async def missing_bad():
        dv = (await opc.read_many([missing]))[0]
        return status_name(dv.StatusCode) == "BadConfigurationError"

    await wait_for(missing_bad, 20, what="Missing tag BadConfigurationError")
    await wait_all_good(opc, "press", ["I16", "Flow", "Running"])
    assert await opc.read(path("press", "Status/Connected")) is True
    assert await opc.read(path("press", "Status/RequestsFailed")) > 0
    assert "exception 0x02" in await opc.read(path("press", "Status/LastError"))
    # A write the device answers with an exception is refused as a device failure.
    failed = await opc.read(path("press", "Status/RequestsFailed"))
    status = await opc.write_status(missing, ua.Variant(5, ua.VariantType.UInt16))
    assert status_name(status) == "BadDeviceFailure"
    assert await opc.read(path("press", "Status/RequestsFailed")) > failed
    assert await opc.read(path("press", "Status/Connected")) is True


async def test_neighbouring_registers_are_read_in_few_requests(opc, peers):
    main, _ = peers
    await wait_all_good(opc, "bulk", ["R000", "R199", "In0"])
    assert await opc.read(path("bulk", "R150")) == 150
    window = 3.0
    before = main.counts()
    await asyncio.sleep(window)
    after = main.counts()
    holding = after[f"{COALESCE_UNIT}:3"] - before[f"{COALESCE_UNIT}:3"]
    inputs = after[f"{COALESCE_UNIT}:4"] - before[f"{COALESCE_UNIT}:4"]
    cycles = inputs
    # 200 holding registers: one read of 125 and one of 75 per cycle; one input read.
    assert abs(holding - 2 * cycles) <= 2, (holding, cycles)
    assert 0.5 * window * 1000 / BULK_POLL_MS <= cycles <= 1.2 * window * 1000 / BULK_POLL_MS, cycles
    assert after[f"{COALESCE_UNIT}:1"] == 0 and after[f"{COALESCE_UNIT}:2"] == 0


async def test_peer_killed_then_restarted(opc, peers):
    _, spare = peers
    tags = ["I16", "Pressure", "Running"]
    status = lambda name: path("feeder", f"Status/{name}")  # noqa: E731
    await wait_all_good(opc, "feeder", tags)
    reconnects = await opc.read(status("Reconnects"))
    assert await opc.read(status("Connected")) is True

    spare.kill()

    async def all_bad():
        values = await opc.read_many([path("feeder", t) for t in tags])
        return all(dv.StatusCode.is_bad() for dv in values)

    await wait_for(all_bad, 10, what="feeder tags Bad after the peer died")
    await wait_for(lambda: _is_false(opc, status("Connected")), 10, what="Connected false")
    assert await opc.read(status("LastError")) != ""

    spare.start()
    spare.set(1, 16, 0, encode("int16", 777))
    await wait_all_good(opc, "feeder", tags, timeout=40)
    await wait_for(lambda: _equals(opc, path("feeder", "I16"), 777), 10, what="fresh value 777")
    assert await opc.read(status("Connected")) is True
    assert await opc.read(status("Reconnects")) == reconnects + 1


async def _is_false(opc, p: str) -> bool:
    return await opc.read(p) is False


async def _equals(opc, p: str, want) -> bool:
    return await opc.read(p) == want


def test_the_example_configuration_is_valid(gateway_bin):
    example = Path(__file__).resolve().parents[2] / "config" / "examples" / "modbus.toml"
    proc = subprocess.run([str(gateway_bin), "check", "--config", str(example)], env=clean_env(),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_names_device_tag_and_key(gateway_bin, tmp_path):
    text = device_block("press", 5020, 1, [
        ("Speed", "holding:0", "uint16", {}),
        ("Pressure", "holding10", "float32", {}),
    ])
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    proc = subprocess.run([str(gateway_bin), "check", "--config", str(config)], env=clean_env(),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "devices[0].tags[1].register" in out, out
    assert "device `press`" in out and "tag `Pressure`" in out, out

    config.write_text(device_block("press", 5020, 1, [("P", "input:3", "int16", {"access": "readwrite"})],
                                   word_order="middle"), encoding="utf-8")
    proc = subprocess.run([str(gateway_bin), "check", "--config", str(config)], env=clean_env(),
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert "devices[0].word_order" in proc.stdout + proc.stderr
