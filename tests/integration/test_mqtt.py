"""The MQTT device adapter against a real broker (mosquitto), seen through the OPC UA server.

The gateway runs config/examples/mqtt.toml, pointed at a mosquitto started on a free loopback
port; the test plays the partner's oven with mosquitto_pub / mosquitto_sub.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess

import pytest
from asyncua import ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, REPO_ROOT, clean_env, connect, status_name, wait_for
from peer_mqtt import Broker, Subscriber, tools_missing

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")

EXAMPLE = REPO_ROOT / "config" / "examples" / "mqtt.toml"
OVEN = "Fabrique/Stations/Partners/oven"
TELEMETRY = "partner/oven/telemetry"
STATUS = f"{OVEN}/Status"

GOOD_DOC = {
    "temp": 182.5,
    "setpoint": 180.0,
    "count": 12,
    "running": True,
    "mode": "bake",
    "energy": {"total": 5310},
}


def example_config(broker: Broker) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    text, n = re.subn(r'(?m)^broker = ".*"$', f'broker = "{broker.address}"', text)
    assert n == 1, "the example must have exactly one `broker = ...` line"
    return text


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def mqtt_gateway(gateway_bin, broker, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway-mqtt")
    config = workdir / "mqtt.toml"
    config.write_text(example_config(broker), encoding="utf-8")
    gw = start_gateway(gateway_bin, workdir, FAST_SIMULATION_ENV, "mqtt", args=["--config", str(config)])
    yield gw
    stop_gateway(gw)


@pytest.fixture
async def opc(mqtt_gateway):
    async with connect(mqtt_gateway) as o:
        yield o


async def read_dv(opc, name: str) -> ua.DataValue:
    return await opc.node(f"{OVEN}/{name}").read_data_value(raise_on_bad_status=False)


async def publish_until(opc, broker: Broker, topic: str, payload: str, name: str, expected, timeout: float = 20):
    """Publish until `name` reads `expected`, Good: the gateway may not have subscribed yet."""

    async def arrived():
        broker.publish(topic, payload)
        dv = await read_dv(opc, name)
        return dv.StatusCode.is_good() and dv.Value.Value == expected

    await wait_for(arrived, timeout, interval=0.5, what=f"{name} to read {expected!r}, Good")


async def test_json_fields_and_plain_payloads_arrive_good_with_their_types(opc, broker):
    await publish_until(opc, broker, TELEMETRY, json.dumps(GOOD_DOC), "Temperature", 182.5)
    expected = {
        "Temperature": (182.5, ua.VariantType.Double),
        "Setpoint": (180.0, ua.VariantType.Double),
        "BatchCount": (12, ua.VariantType.Int16),
        "Running": (True, ua.VariantType.Boolean),
        "Mode": ("bake", ua.VariantType.String),
        "Energy": (5310, ua.VariantType.UInt32),
    }
    for name, (value, variant) in expected.items():
        dv = await read_dv(opc, name)
        assert dv.StatusCode.is_good(), f"{name}: {status_name(dv.StatusCode)}"
        assert dv.Value.Value == value, f"{name}: {dv.Value.Value!r}"
        assert dv.Value.VariantType == variant, f"{name}: {dv.Value.VariantType}"

    await publish_until(opc, broker, "partner/oven/door", "true", "DoorOpen", True)
    await publish_until(opc, broker, "partner/oven/door", "0", "DoorOpen", False)
    await publish_until(opc, broker, "partner/oven/recipe", "Brioche au beurre", "Recipe", "Brioche au beurre")
    assert (await read_dv(opc, "Recipe")).Value.VariantType == ua.VariantType.String

    assert await opc.read(f"{STATUS}/Connected") is True
    assert await opc.read(f"{STATUS}/RequestsOk") > 0
    assert await opc.read(f"{OVEN}/Protocol") == "mqtt"


@pytest.mark.parametrize(
    "case, payload",
    [
        ("not JSON", "{temp: 1"),
        ("not UTF-8", b"\xff\xfe\x00"),
        ("wrong type", json.dumps({**GOOD_DOC, "temp": "hot", "count": 3.7})),
        ("missing field", json.dumps({"setpoint": 180.0})),
        ("out of range for int16", json.dumps({**GOOD_DOC, "count": 70000})),
    ],
)
async def test_a_bad_payload_keeps_the_last_value_and_is_counted(opc, broker, case, payload):
    doc = {**GOOD_DOC, "temp": 150.25, "count": 7}
    await publish_until(opc, broker, TELEMETRY, json.dumps(doc), "Temperature", 150.25)
    await wait_for(lambda: _reads(opc, "BatchCount", 7), 10, what="BatchCount 7")
    failed_before = await opc.read(f"{STATUS}/RequestsFailed")

    broker.publish(TELEMETRY, payload)

    async def counted():
        return await opc.read(f"{STATUS}/RequestsFailed") > failed_before

    await wait_for(counted, 10, what=f"RequestsFailed to grow after a {case} payload")
    for name, value in (("Temperature", 150.25), ("BatchCount", 7)):
        dv = await read_dv(opc, name)
        if case == "out of range for int16" and name == "Temperature":
            continue  # that message carried a good temperature, which was taken
        assert dv.Value.Value == value, f"{case}: {name} changed to {dv.Value.Value!r}"
        assert dv.StatusCode.is_good(), f"{case}: {name} turned {status_name(dv.StatusCode)}"
    assert await opc.read(f"{STATUS}/Connected") is True
    assert await opc.read(f"{STATUS}/LastError") != ""

    # The next good message is taken as usual.
    await publish_until(opc, broker, TELEMETRY, json.dumps({**doc, "temp": 151.0}), "Temperature", 151.0)


async def _reads(opc, name: str, value) -> bool:
    dv = await read_dv(opc, name)
    return dv.StatusCode.is_good() and dv.Value.Value == value


async def test_writes_are_published_on_the_command_topic(opc, broker):
    await publish_until(opc, broker, TELEMETRY, json.dumps(GOOD_DOC), "Setpoint", 180.0)
    sub = Subscriber(broker, "partner/oven/cmd/#")
    try:
        await asyncio.to_thread(sub.wait_ready, "partner/oven/cmd/probe")
        ok_before = await opc.read(f"{STATUS}/RequestsOk")

        code = await opc.write_status(f"{OVEN}/Setpoint", ua.Variant(190.0, ua.VariantType.Double))
        assert code.is_good(), status_name(code)
        topic, payload = await asyncio.to_thread(sub.next, 10)
        assert topic == "partner/oven/cmd/setpoint"
        assert json.loads(payload) == {"value": 190.0}, payload
        assert await opc.read(f"{STATUS}/RequestsOk") > ok_before
        # MQTT has no answer from the device: the tag shows what the oven reports, not the write.
        dv = await read_dv(opc, "Setpoint")
        assert dv.Value.Value == 180.0 and dv.StatusCode.is_good()
        await publish_until(opc, broker, TELEMETRY, json.dumps({**GOOD_DOC, "setpoint": 190.0}), "Setpoint", 190.0)

        code = await opc.write_status(f"{OVEN}/Light", ua.Variant(True, ua.VariantType.Boolean))
        assert code.is_good(), status_name(code)
        assert await asyncio.to_thread(sub.next, 10) == ("partner/oven/cmd/light", "true")

        # Refused before anything is published.
        refused = [
            ("Setpoint", ua.Variant(300.5, ua.VariantType.Double), {ua.StatusCodes.BadOutOfRange}),
            ("Setpoint", ua.Variant("hot", ua.VariantType.String), {ua.StatusCodes.BadTypeMismatch}),
            # Read-only: refused by the address space itself, which says so either way.
            (
                "Temperature",
                ua.Variant(20.0, ua.VariantType.Double),
                {ua.StatusCodes.BadNotWritable, ua.StatusCodes.BadUserAccessDenied},
            ),
        ]
        for name, variant, expected in refused:
            code = await opc.write_status(f"{OVEN}/{name}", variant)
            assert code.value in expected, f"{name} <- {variant.Value!r}: {status_name(code)}"
        code = await opc.write_status(f"{OVEN}/Setpoint", ua.Variant(0.0, ua.VariantType.Double))
        assert code.is_good(), status_name(code)
        # The next message on the command topics is this last write: the refused ones sent nothing.
        topic, payload = await asyncio.to_thread(sub.next, 10)
        assert (topic, json.loads(payload)) == ("partner/oven/cmd/setpoint", {"value": 0.0})
    finally:
        sub.close()


async def test_broker_restart_turns_tags_bad_then_good_again(opc, broker):
    await publish_until(opc, broker, TELEMETRY, json.dumps(GOOD_DOC), "Temperature", 182.5)
    reconnects = await opc.read(f"{STATUS}/Reconnects")

    broker.kill()
    try:

        async def lost():
            dv = await read_dv(opc, "Temperature")
            return dv.StatusCode.is_bad() and await opc.read(f"{STATUS}/Connected") is False

        await wait_for(lost, 20, what="Temperature Bad and Connected false after the broker died")
        dv = await read_dv(opc, "Temperature")
        assert dv.Value.Value == 182.5, "the last value is kept, with a Bad status"
        assert await opc.read(f"{STATUS}/LastError") != ""
        code = await opc.write_status(f"{OVEN}/Setpoint", ua.Variant(100.0, ua.VariantType.Double))
        assert code.value == ua.StatusCodes.BadNoCommunication, status_name(code)
    finally:
        broker.start()

    await wait_for(
        lambda: _connected(opc), 40, what="Connected true again after the broker came back"
    )
    await publish_until(opc, broker, TELEMETRY, json.dumps({**GOOD_DOC, "temp": 190.5}), "Temperature", 190.5)
    assert await opc.read(f"{STATUS}/Reconnects") == reconnects + 1
    assert await opc.read(f"{STATUS}/LastError") == ""


async def _connected(opc) -> bool:
    return await opc.read(f"{STATUS}/Connected") is True


def test_check_names_the_device_tag_and_key_of_a_writable_tag_without_command_topic(gateway_bin, tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8")
    text, n = re.subn(r'(?m)^\s*command_topic = "partner/oven/cmd/setpoint".*$', "", text)
    assert n == 1
    path = tmp_path / "bad-mqtt.toml"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [str(gateway_bin), "check", "--config", str(path)],
        env=clean_env(),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0, proc.stdout
    for word in ("devices[0].tags[1].command_topic", "device `oven`", "tag `Setpoint`", str(path)):
        assert word in proc.stderr, f"stderr does not name {word}:\n{proc.stderr}"


def test_check_accepts_the_example(gateway_bin, tmp_path):
    proc = subprocess.run(
        [str(gateway_bin), "check", "--config", str(EXAMPLE)],
        env=clean_env(),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


DRYER = "Fabrique/Stations/Partners/dryer"


async def test_qos0_plain_commands_and_stale_values_turn_uncertain(gateway_factory, broker, tmp_path):
    config = tmp_path / "dryer.toml"
    config.write_text(
        f"""
[[devices]]
name = "dryer"
station = "Partners"
protocol = "mqtt"
broker = "{broker.address}"
client_id = "fabrique-test-dryer"
qos = 0
stale_after_ms = 600

  [[devices.tags]]
  name = "Humidity"
  topic = "partner/dryer/humidity"
  type = "float32"
  unit = "%"

  [[devices.tags]]
  name = "FanStage"
  topic = "partner/dryer/fan"
  type = "uint16"
  access = "readwrite"
  range = {{ low = 0, high = 3 }}
  command_topic = "partner/dryer/cmd/fan"
  command_format = "plain"
""",
        encoding="utf-8",
    )
    gw = gateway_factory(name="dryer", args=["--config", str(config)])
    async with connect(gw) as opc:
        node = opc.node(f"{DRYER}/Humidity")

        async def humidity():
            return await node.read_data_value(raise_on_bad_status=False)

        async def good(value: float):
            broker.publish("partner/dryer/humidity", str(value), qos=0)
            dv = await humidity()
            return dv.StatusCode.is_good() and dv.Value.Value == value

        await wait_for(lambda: good(40.5), 20, interval=0.3, what="Humidity 40.5, Good")
        assert (await humidity()).Value.VariantType == ua.VariantType.Float

        async def uncertain():
            dv = await humidity()
            return dv.StatusCode.value == ua.StatusCodes.UncertainLastUsableValue and dv.Value.Value == 40.5

        await wait_for(uncertain, 10, what="Humidity UncertainLastUsableValue once not refreshed for 600 ms")
        await wait_for(lambda: good(41.0), 10, interval=0.3, what="Humidity Good again with fresh telemetry")

        sub = Subscriber(broker, "partner/dryer/cmd/#")
        try:
            await asyncio.to_thread(sub.wait_ready, "partner/dryer/cmd/probe")
            code = await opc.write_status(f"{DRYER}/FanStage", ua.Variant(2, ua.VariantType.UInt16))
            assert code.is_good(), status_name(code)
            assert await asyncio.to_thread(sub.next, 10) == ("partner/dryer/cmd/fan", "2")
            code = await opc.write_status(f"{DRYER}/FanStage", ua.Variant(4, ua.VariantType.UInt16))
            assert code.value == ua.StatusCodes.BadOutOfRange, status_name(code)
        finally:
            sub.close()
