"""Sparkplug B edge node (`[sparkplug]`) against mosquitto, decoded by pysparkplug.

pysparkplug (its own generated protobuf classes) is the independent decoder: births decode,
data aliases resolve to the birth's names, a killed gateway's NDEATH (the MQTT will) carries
its NBIRTH's bdSeq, `Node Control/Rebirth` produces new births, a DCMD write reaches a
pymodbus register when `sparkplug.command_role` allows it and not when it is `viewer`, a device
that stops answering dies (DDEATH) and is born again (DBIRTH) when it is back, and with
`stop_in_payload` every data metric carries the stop as its `stop` property.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pysparkplug as spb
import pytest
from pysparkplug._protobuf import Payload as PbPayload

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV
from peer_modbus import PeerProcess, decode
from peer_mqtt import Broker, tools_missing

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")

GROUP = "fleet"
EDGE = "truck-7"
DEVICE = "Partners:press"


def device_config(port: int) -> str:
    return f"""
[[devices]]
name = "press"
station = "Partners"
protocol = "modbus"
address = "127.0.0.1:{port}"
unit = 1
poll_ms = 200

  [[devices.tags]]
  name = "Pressure"
  register = "holding:14"
  type = "float32"
  access = "readwrite"
  unit = "bar"
  range = {{ low = 0.0, high = 250.0 }}

  [[devices.tags]]
  name = "Level"
  register = "input:2"
  type = "uint16"
"""


class Host:
    """A Sparkplug host's view of the broker: every `spBv1.0/#` message, in order."""

    def __init__(self, broker: Broker):
        self.messages: queue.Queue = queue.Queue()
        self.client = paho.Client(client_id=f"test-host-{time.monotonic_ns()}")
        self.client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("spBv1.0/#", qos=1)
        self.client.loop_start()
        assert subscribed.wait(timeout=10), "no SUBACK from mosquitto"

    def next(self, predicate, timeout: float = 30.0, what: str = "message"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, payload = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if predicate(topic):
                return topic, payload
        raise AssertionError(f"no {what} within {timeout} s")

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def topic(kind: str, device: str | None = None) -> str:
    base = f"spBv1.0/{GROUP}/{kind}/{EDGE}"
    return f"{base}/{device}" if device else base


def sparkplug_env(broker: Broker, role: str) -> dict[str, str]:
    return {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__SITE__ID": "site-x",
        "FABRIQUE__SPARKPLUG__ENABLED": "true",
        "FABRIQUE__SPARKPLUG__BROKER": broker.address,
        "FABRIQUE__SPARKPLUG__GROUP_ID": GROUP,
        "FABRIQUE__SPARKPLUG__EDGE_NODE_ID": EDGE,
        "FABRIQUE__SPARKPLUG__COMMAND_ROLE": role,
        "FABRIQUE__SPARKPLUG__STOP_IN_PAYLOAD": "true",
    }


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("sparkplug-broker"))
    b.start()
    yield b
    b.kill()


@pytest.fixture(scope="module")
def press(tmp_path_factory):
    peer = PeerProcess(tmp_path_factory.mktemp("sparkplug-modbus") / "peer.log")
    peer.start()
    yield peer
    peer.kill()


@pytest.fixture(scope="module")
def host(broker):
    h = Host(broker)
    yield h
    h.close()


@pytest.fixture(scope="module")
def births(gateway_bin, tmp_path_factory, broker, press, host):
    """An operator-role gateway, and the NBIRTH and DBIRTH of the press it published."""
    work = tmp_path_factory.mktemp("sparkplug-gateway")
    config = work / "sparkplug.toml"
    config.write_text(device_config(press.port), encoding="utf-8")
    gw = start_gateway(gateway_bin, work, sparkplug_env(broker, "operator"), "sparkplug",
                       args=["--config", str(config)])
    _, raw = host.next(lambda t: t == topic("NBIRTH"), what="NBIRTH")
    nbirth = spb.NBirth.decode(raw)
    _, raw = host.next(lambda t: t == topic("DBIRTH", DEVICE), what="DBIRTH of the press")
    yield gw, nbirth, spb.DBirth.decode(raw), raw
    stop_gateway(gw)


def metric(payload, name: str):
    found = [m for m in payload.metrics if m.name == name]
    assert found, f"no metric {name} in {[m.name for m in payload.metrics]}"
    return found[0]


def test_births_carry_names_aliases_types_and_units(births):
    _gw, nbirth, dbirth, raw = births
    assert nbirth.seq == 0
    assert metric(nbirth, "bdSeq").datatype == spb.DataType.INT64
    assert metric(nbirth, "Node Control/Rebirth").value is False
    assert metric(nbirth, "Line/State").datatype == spb.DataType.STRING
    # Every metric has an alias, unique within the node.
    aliases = [m.alias for m in nbirth.metrics + dbirth.metrics]
    assert None not in aliases and len(set(aliases)) == len(aliases)
    assert dbirth.seq > nbirth.seq
    pressure = metric(dbirth, "Pressure")
    assert pressure.datatype == spb.DataType.FLOAT
    assert metric(dbirth, "Level").datatype == spb.DataType.UINT16
    assert metric(dbirth, "Status/Connected").datatype == spb.DataType.BOOLEAN
    # Engineering units as metric properties (read from the raw protobuf: pysparkplug's
    # Metric keeps no properties).
    pb = PbPayload.FromString(raw)
    [pb_pressure] = [m for m in pb.metrics if m.name == "Pressure"]
    props = dict(zip(pb_pressure.properties.keys, pb_pressure.properties.values))
    assert props["engUnit"].string_value == "bar"
    assert props["engHigh"].double_value == 250.0


def test_data_messages_carry_aliases_that_resolve_to_the_birth(births, host):
    _gw, nbirth, _dbirth, _raw = births
    _, raw = host.next(lambda t: t == topic("NDATA"), what="NDATA")
    pb = PbPayload.FromString(raw)
    assert all(not m.HasField("name") for m in pb.metrics), "data by alias only"
    ndata = spb.NData.decode(raw, birth=nbirth)
    names = {m.name for m in ndata.metrics}
    assert names, "an NDATA with metrics"
    assert names <= {m.name for m in nbirth.metrics}
    assert 0 <= ndata.seq <= 255


def test_rebirth_command_produces_new_births(births, host):
    _gw, nbirth, _dbirth, _raw = births
    command = spb.NCmd(
        timestamp=spb.get_current_timestamp(),
        metrics=(spb.Metric(timestamp=spb.get_current_timestamp(), name="Node Control/Rebirth",
                            datatype=spb.DataType.BOOLEAN, value=True),),
    )
    host.publish(topic("NCMD"), command.encode(include_dtypes=True))
    _, raw = host.next(lambda t: t == topic("NBIRTH"), what="NBIRTH after Rebirth")
    again = spb.NBirth.decode(raw)
    assert again.seq == 0
    # Same connection: the same bdSeq.
    assert metric(again, "bdSeq").value == metric(nbirth, "bdSeq").value
    host.next(lambda t: t == topic("DBIRTH", DEVICE), what="DBIRTH after Rebirth")


def dcmd(value: float) -> bytes:
    return spb.DCmd(
        timestamp=spb.get_current_timestamp(),
        metrics=(spb.Metric(timestamp=spb.get_current_timestamp(), name="Pressure",
                            datatype=spb.DataType.FLOAT, value=value),),
    ).encode(include_dtypes=True)


def wait_register(press, value: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if decode("float32", press.get(1, 3, 14, 2)) == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"holding:14 never became {value}: {decode('float32', press.get(1, 3, 14, 2))}")


def test_a_dcmd_write_reaches_the_modbus_register(births, host, press):
    host.publish(topic("DCMD", DEVICE), dcmd(42.25))
    wait_register(press, 42.25)
    # And the new value comes back as a DDATA of the press, by alias.
    _gw, _nbirth, dbirth, _raw = births
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, raw = host.next(lambda t: t == topic("DDATA", DEVICE), what="DDATA of the press")
        values = {m.name: m.value for m in spb.DData.decode(raw, birth=dbirth).metrics}
        if values.get("Pressure") == 42.25:
            return
    raise AssertionError("no DDATA with the written pressure")


def test_a_viewer_configuration_refuses_writes(gateway_bin, tmp_path, broker, press):
    press.set(1, 16, 14, [0, 0])
    wait_register(press, 0.0)
    config = tmp_path / "viewer.toml"
    config.write_text(device_config(press.port), encoding="utf-8")
    env = sparkplug_env(broker, "viewer")
    env["FABRIQUE__SPARKPLUG__EDGE_NODE_ID"] = "viewer-truck"
    watcher = Host(broker)
    gw = start_gateway(gateway_bin, tmp_path, env, "sparkplug-viewer", args=["--config", str(config)])
    try:
        watcher.next(lambda t: t == f"spBv1.0/{GROUP}/DBIRTH/viewer-truck/{DEVICE}",
                     what="DBIRTH of the viewer gateway")
        watcher.publish(f"spBv1.0/{GROUP}/DCMD/viewer-truck/{DEVICE}", dcmd(99.5))
        deadline = time.monotonic() + 20
        while "sparkplug.command_role is Viewer" not in gw.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the refusal was not logged"
            time.sleep(0.1)
        assert decode("float32", press.get(1, 3, 14, 2)) == 0.0
    finally:
        watcher.close()
        stop_gateway(gw)


def properties(metric) -> dict:
    return {k: v.string_value for k, v in zip(metric.properties.keys, metric.properties.values)}


def test_every_data_metric_carries_the_stop(births, host):
    _, raw = host.next(lambda t: t == topic("DDATA", "Printing:Printer3D"),
                       what="DDATA of the simulated printer")
    pb = PbPayload.FromString(raw)
    assert pb.metrics
    assert all(properties(m).get("stop") == "Lens" for m in pb.metrics), pb
    _gw, nbirth, _dbirth, _raw = births
    assert metric(nbirth, "Stop/Town").value == "Lens"


def until(host: Host, predicate, timeout: float, what: str) -> tuple[list[str], bytes]:
    """The topics seen up to and including the first that matches, and its payload."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {what} within {timeout} s"
        t, raw = host.next(lambda _t: True, timeout=remaining, what=what)
        seen.append(t)
        if predicate(t):
            return seen, raw


def test_a_device_that_goes_away_dies_and_is_born_again(births, host, press):
    press.kill()
    until(host, lambda t: t == topic("DDEATH", DEVICE), 60, "DDEATH of the press")
    press.start()
    seen, raw = until(host, lambda t: t == topic("DBIRTH", DEVICE), 60, "DBIRTH of the press")
    # Dead for the host: no data of the press between its death and its new birth.
    assert topic("DDATA", DEVICE) not in seen, seen
    # The new birth is read from the raw payload: it carries every metric, named, with the
    # device connected again.
    pb = PbPayload.FromString(raw)
    names = {m.name: m for m in pb.metrics}
    assert {"Pressure", "Level", "Status/Connected"} <= set(names), names.keys()
    assert names["Status/Connected"].boolean_value is True


def test_a_killed_gateway_dies_with_the_bdseq_of_its_birth(births, host):
    """Last in the module: kills the shared gateway."""
    gw, _nbirth, _dbirth, _raw = births
    # The current connection's bdSeq: the last NBIRTH's (a rebirth keeps it).
    command = spb.NCmd(
        timestamp=spb.get_current_timestamp(),
        metrics=(spb.Metric(timestamp=spb.get_current_timestamp(), name="Node Control/Rebirth",
                            datatype=spb.DataType.BOOLEAN, value=True),),
    )
    host.publish(topic("NCMD"), command.encode(include_dtypes=True))
    _, raw = host.next(lambda t: t == topic("NBIRTH"), what="NBIRTH")
    bd_seq = metric(spb.NBirth.decode(raw), "bdSeq").value
    gw.proc.kill()
    gw.proc.wait(timeout=10)
    _, raw = host.next(lambda t: t == topic("NDEATH"), what="NDEATH (last will)")
    death = spb.NDeath.decode(raw)
    assert death.bd_seq_metric.name == "bdSeq"
    assert death.bd_seq_metric.value == bd_seq
