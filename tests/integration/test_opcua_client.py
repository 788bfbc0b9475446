"""The OPC UA client adapter (`protocol = "opcua"`) against a partner's asyncua server.

The partner is tests/integration/peer_opcua.py on a free loopback port; the gateway runs
config/examples/opcua.toml pointed at it, plus a few tags that exercise the error paths. Every
assertion goes through the gateway's own OPC UA server, except where the partner is read
directly to see that a write really reached it.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from asyncua import Client, ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, REPO_ROOT, connect, free_port, status_name, wait_for

PEER_SCRIPT = Path(__file__).with_name("peer_opcua.py")
EXAMPLE = REPO_ROOT / "config" / "examples" / "opcua.toml"
EXAMPLE_ENDPOINT = "opc.tcp://127.0.0.1:4841/"
PARTNER_NS = "urn:partner:cell"
DEVICE = "Fabrique/Stations/Partners/partner-cell"

# Tags that go wrong on purpose, appended to the example's device.
ERROR_TAGS = """
  [[devices.tags]]
  name = "PressureAsInt"
  node_id = "nsu=urn:partner:cell;s=Pressure"
  type = "int32"

  [[devices.tags]]
  name = "Sensor"
  node_id = "nsu=urn:partner:cell;s=Sensor"
  type = "float64"

  [[devices.tags]]
  name = "Missing"
  browse_path = "Objects/nsu=urn:partner:cell;Cell/nsu=urn:partner:cell;NoSuchNode"
  type = "float64"
"""

# ns=0 DataType ids
BOOLEAN, INT32, DOUBLE, STRING = 1, 6, 11, 12


class Partner:
    """The partner's server as a subprocess; restartable on the same port."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    def start(self, pad_namespaces: int = 0) -> None:
        self.starts += 1
        log = self.log_dir / f"partner-{self.starts}.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(PEER_SCRIPT), "--port", str(self.port), "--pad-namespaces", str(pad_namespaces)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"partner server exited with {self.proc.returncode}:\n{log.read_text()}")
            if "ready" in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        pytest.fail(f"partner server not ready within 30 s:\n{log.read_text()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def partner(tmp_path_factory):
    p = Partner(tmp_path_factory.mktemp("partner"))
    p.start()
    yield p
    p.kill()


@pytest.fixture(scope="module")
def cell_gateway(gateway_bin, partner, tmp_path_factory):
    directory = tmp_path_factory.mktemp("opcua-client")
    text = EXAMPLE.read_text(encoding="utf-8")
    assert EXAMPLE_ENDPOINT in text
    config = directory / "opcua.toml"
    config.write_text(text.replace(EXAMPLE_ENDPOINT, partner.url) + ERROR_TAGS, encoding="utf-8")
    gw = start_gateway(gateway_bin, directory, FAST_SIMULATION_ENV, "opcua-client", args=["--config", str(config)])
    yield gw
    stop_gateway(gw)


@contextlib.asynccontextmanager
async def partner_client(partner: Partner):
    client = Client(partner.url, timeout=10)
    await client.connect()
    try:
        yield client, await client.get_namespace_index(PARTNER_NS)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def read_dv(opc, tag: str) -> ua.DataValue:
    return (await opc.read_many([f"{DEVICE}/{tag}"]))[0]


async def good_value(opc, tag: str):
    dv = await read_dv(opc, tag)
    return dv if dv.StatusCode.is_good() else None


def recent(ts: datetime | None, seconds: float = 30) -> bool:
    return ts is not None and abs(datetime.now(timezone.utc) - ts.replace(tzinfo=timezone.utc)) < timedelta(
        seconds=seconds
    )


async def test_mirrored_values_are_good_typed_and_changing(cell_gateway):
    expected = {
        "Temperature": (DOUBLE, ua.VariantType.Double),  # by node id
        "Counter": (INT32, ua.VariantType.Int32),  # by browse path
        "Running": (BOOLEAN, ua.VariantType.Boolean),
        "Mode": (STRING, ua.VariantType.String),
        "Setpoint": (DOUBLE, ua.VariantType.Double),
        "Label": (STRING, ua.VariantType.String),
    }
    async with connect(cell_gateway) as opc:
        for tag, (data_type, variant) in expected.items():
            node_type = await opc.node(f"{DEVICE}/{tag}").read_data_type()
            assert node_type == ua.NodeId(data_type, 0), f"{tag}: DataType {node_type}"
            dv = await wait_for(lambda t=tag: good_value(opc, t), 30, what=f"{tag} Good")
            assert dv.Value.VariantType == variant, f"{tag}: {dv.Value}"
            assert recent(dv.SourceTimestamp), f"{tag}: source timestamp {dv.SourceTimestamp}"
        for tag in ["Temperature", "Counter"]:
            first = (await read_dv(opc, tag)).Value.Value

            async def changed(t=tag, v=first):
                dv = await read_dv(opc, t)
                return dv.StatusCode.is_good() and dv.Value.Value != v

            await wait_for(changed, 10, what=f"{tag} to change")


async def test_the_status_object_says_connected(cell_gateway):
    async with connect(cell_gateway) as opc:
        await wait_for(lambda: good_value(opc, "Temperature"), 30, what="Temperature Good")
        status = f"{DEVICE}/Status"
        assert await opc.read(f"{status}/Connected") is True
        assert await opc.read(f"{status}/Reconnects") == 0
        assert await opc.read(f"{status}/RequestsOk") > 0
        assert recent(await opc.read(f"{status}/LastReadTime"))
        assert await opc.read(f"{DEVICE}/Protocol") == "opcua"


async def test_a_write_reaches_the_partner_and_reads_back(cell_gateway, partner):
    async with connect(cell_gateway) as opc:
        await wait_for(lambda: good_value(opc, "Setpoint"), 30, what="Setpoint Good")
        ok_before = await opc.read(f"{DEVICE}/Status/RequestsOk")
        code = await opc.write_status(f"{DEVICE}/Setpoint", ua.Variant(42.5, ua.VariantType.Double))
        assert code.is_good(), status_name(code)
        assert await opc.read(f"{DEVICE}/Setpoint") == 42.5
        code = await opc.write_status(f"{DEVICE}/Label", ua.Variant("line-7", ua.VariantType.String))
        assert code.is_good(), status_name(code)
        assert await opc.read(f"{DEVICE}/Label") == "line-7"
        assert await opc.read(f"{DEVICE}/Status/RequestsOk") > ok_before
    async with partner_client(partner) as (client, ns):
        assert await client.get_node(ua.NodeId("Setpoint", ns)).read_value() == 42.5
        assert await client.get_node(ua.NodeId("Label", ns)).read_value() == "line-7"


async def test_a_write_the_partner_refuses_comes_back_bad_and_changes_nothing(cell_gateway, partner):
    async with connect(cell_gateway) as opc:
        await wait_for(lambda: good_value(opc, "Setpoint"), 30, what="Setpoint Good")
        code = await opc.write_status(f"{DEVICE}/Setpoint", ua.Variant(33.0, ua.VariantType.Double))
        assert code.is_good(), status_name(code)
        failed_before = await opc.read(f"{DEVICE}/Status/RequestsFailed")
        # The gateway declares no range for Setpoint: the partner's own 0..100 check refuses.
        code = await opc.write_status(f"{DEVICE}/Setpoint", ua.Variant(500.0, ua.VariantType.Double))
        assert status_name(code) == "BadOutOfRange"
        assert await opc.read(f"{DEVICE}/Setpoint") == 33.0
        # At least the refused write (the partner's PressureAsInt samples also count as failures
        # whenever they change, so the exact number is not the write's alone).
        assert await opc.read(f"{DEVICE}/Status/RequestsFailed") >= failed_before + 1
        # LastError may already hold a later PressureAsInt sample's error (they come whenever the
        # partner's value changes); the log keeps the refusal with the partner's own status.
        last_error = await opc.read(f"{DEVICE}/Status/LastError")
        log = cell_gateway.log_path.read_text(errors="replace")
        refusals = [line for line in log.splitlines() if "partner refused a write" in line]
        assert "BadOutOfRange" in last_error or any("BadOutOfRange" in line for line in refusals), last_error
        # The wrong variant type is refused by the gateway before the partner is asked.
        code = await opc.write_status(f"{DEVICE}/Setpoint", ua.Variant(7, ua.VariantType.Int32))
        assert status_name(code) == "BadTypeMismatch"
        # Read-only tags stay read-only.
        code = await opc.write_status(f"{DEVICE}/Temperature", ua.Variant(1.0, ua.VariantType.Double))
        assert code.is_bad()
    async with partner_client(partner) as (client, ns):
        assert await client.get_node(ua.NodeId("Setpoint", ns)).read_value() == 33.0


async def test_partner_status_type_errors_and_missing_nodes(cell_gateway):
    async with connect(cell_gateway) as opc:
        await wait_for(lambda: good_value(opc, "Temperature"), 30, what="Temperature Good")

        async def status_of(tag):
            return status_name((await read_dv(opc, tag)).StatusCode)

        # The partner's Bad status is carried as is.
        await wait_for(lambda: _eq(status_of("Sensor"), "BadSensorFailure"), 10, what="Sensor BadSensorFailure")
        # A Double where the configuration says int32: a type error, counted at every sample...
        await wait_for(lambda: _eq(status_of("PressureAsInt"), "BadTypeMismatch"), 10, what="BadTypeMismatch")
        failed = await opc.read(f"{DEVICE}/Status/RequestsFailed")
        await wait_for(
            lambda: _gt(opc.read(f"{DEVICE}/Status/RequestsFailed"), failed + 3), 10, what="failures counted"
        )
        # ... but logged once.
        log = cell_gateway.log_path.read_text(errors="replace")
        assert log.count("PressureAsInt") >= 1
        warnings = [line for line in log.splitlines() if "partner node rejected" in line and "PressureAsInt" in line]
        assert len(warnings) == 1, "\n".join(warnings)
        # A browse path the partner does not have: that tag is Bad, the others are not.
        assert (await status_of("Missing")).startswith("Bad")
        assert (await read_dv(opc, "Counter")).StatusCode.is_good()


async def _eq(awaitable, expected):
    return (await awaitable) == expected


async def _gt(awaitable, threshold):
    return (await awaitable) > threshold


async def test_partner_restart_turns_tags_bad_then_good_again(cell_gateway, partner):
    """Killed, then restarted on the same port with its namespace at another index."""
    async with connect(cell_gateway) as opc:
        status = f"{DEVICE}/Status"
        await wait_for(lambda: good_value(opc, "Counter"), 30, what="Counter Good")
        reconnects = await opc.read(f"{status}/Reconnects")

        partner.kill()

        async def lost():
            dv = await read_dv(opc, "Temperature")
            return status_name(dv.StatusCode) == "BadCommunicationError" and await opc.read(f"{status}/Connected") is False

        await wait_for(lost, 20, what="Temperature BadCommunicationError and Connected false")
        assert (await read_dv(opc, "Counter")).StatusCode.is_bad()
        assert await opc.read(f"{status}/LastError") != ""

        restarted = datetime.now(timezone.utc)
        partner.start(pad_namespaces=3)

        async def fresh():
            dv = await read_dv(opc, "Counter")
            ts = dv.SourceTimestamp
            return (
                dv.StatusCode.is_good()
                and ts is not None
                and ts.replace(tzinfo=timezone.utc) > restarted
                and (await read_dv(opc, "Temperature")).StatusCode.is_good()
            )

        await wait_for(fresh, 45, what="fresh Good values after the partner restarted")
        assert await opc.read(f"{status}/Connected") is True
        assert await opc.read(f"{status}/Reconnects") == reconnects + 1
        # Cleared on reconnection; only the deliberately mistyped tag may have set it since.
        assert "connection" not in await opc.read(f"{status}/LastError")


def test_check_names_the_device_tag_and_key_of_a_bad_address(gateway_bin, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        """
[[devices]]
name = "partner-cell"
station = "Partners"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4841/"

  [[devices.tags]]
  name = "Temperature"
  node_id = "nsu=urn:partner:cell;s=Temperature"
  browse_path = "Objects/2:Cell/2:Temperature"
  type = "float64"
""",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [str(gateway_bin), "check", "--config", str(config)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    for word in ["devices[0].tags[0].browse_path", "partner-cell", "Temperature", "not both", str(config)]:
        assert word in proc.stderr, f"stderr does not name `{word}`:\n{proc.stderr}"
