"""OPC UA Part 14 PubSub JSON on MQTT (`[mqtt] payload = "ua-json"`) against mosquitto.

Every message is validated against docs/part14-pubsub-json.schema.json (written from Part 14
1.05, section 7.2.5) with `jsonschema`; the metadata is retained; a 2 Hz counter arrives with no
missing change; sequence numbers count up per DataSetWriter; keep-alives come; the retained
ua-status says Operational while the gateway runs and Error after it stops.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as paho
import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV
from peer_mqtt import Broker, tools_missing

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "part14-pubsub-json.schema.json").read_text()
)
SITE = "fabrique-hdf"
DATA = f"opcua/json/data/{SITE}/fabrique"
METADATA = f"opcua/json/metadata/{SITE}/fabrique"
STATUS = f"opcua/json/status/{SITE}"
WRITER = "Synthetic.Load"


class Watcher:
    def __init__(self, broker: Broker, topic_filter: str):
        self.messages: queue.Queue = queue.Queue()
        self.client = paho.Client(client_id=f"part14-{time.monotonic_ns()}")
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, json.loads(m.payload), m.retain))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        assert subscribed.wait(timeout=10), "no SUBACK from mosquitto"

    def collect(self, until, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.2)
            except queue.Empty:
                continue
            if until(message):
                return
        raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("part14-broker"))
    b.start()
    yield b
    b.kill()


def test_messages_follow_part14_carry_every_change_and_metadata_is_retained(
        gateway_bin, broker, tmp_path):
    env = {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
        "FABRIQUE__MQTT__PAYLOAD": "ua-json",
        "FABRIQUE__MQTT__PREFIX": "opcua",
        "FABRIQUE__MQTT__UA_KEEP_ALIVE_MS": "100",
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "3",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "2",
    }
    # Part 14 owns `opcua/json/...`; the presence topic (`opcua/<site>/presence`) is not its.
    watcher = Watcher(broker, "opcua/json/#")
    gw = start_gateway(gateway_bin, tmp_path, env, "part14")
    counter: list[int] = []
    sequence: dict[int, list[int]] = {}
    kinds: set[str] = set()
    metadata: dict[str, dict] = {}
    statuses: list[int] = []

    def on_message(message) -> bool:
        topic, doc, _retain = message
        jsonschema.validate(doc, SCHEMA)
        if topic == STATUS:
            statuses.append(doc["Status"])
        elif topic.startswith(METADATA + "/"):
            metadata[topic.rsplit("/", 1)[1]] = doc
        elif topic == DATA:
            assert doc["PublisherId"] == SITE and doc["WriterGroupName"] == "fabrique"
            for dsm in doc["Messages"]:
                kinds.add(dsm["MessageType"])
                sequence.setdefault(dsm["DataSetWriterId"], []).append(dsm["SequenceNumber"])
                if dsm.get("DataSetWriterName") == WRITER and "T000000" in dsm.get("Payload", {}):
                    counter.append(int(dsm["Payload"]["T000000"]["Value"]))
        return len(set(counter)) >= 15 and "ua-keepalive" in kinds

    try:
        watcher.collect(on_message, 60, "15 values of T000000 and a keep-alive")
        # Metadata: every writer, the synthetic one with its three fields and their types.
        assert statuses[:1] == [2], f"ua-status Operational first: {statuses}"
        assert WRITER in metadata and "Truck" in metadata, sorted(metadata)
        fields = {f["Name"]: f for f in metadata[WRITER]["MetaData"]["Fields"]}
        assert {"T000000", "T000001", "T000002", "Status/Connected"} <= set(fields), sorted(fields)
        assert all(fields[f"T00000{i}"]["BuiltInType"] == 11 for i in range(3)), fields
        assert fields["Status/Connected"]["BuiltInType"] == 1
        writer_id = metadata[WRITER]["DataSetWriterId"]
        # A key frame opened the connection.
        assert "ua-keyframe" in kinds and "ua-deltaframe" in kinds, kinds
        # Every change of the 2 Hz counter, in order, none missing (the key frame may repeat
        # the value a delta frame carried just before the connection).
        assert counter == sorted(counter), counter
        distinct = sorted(set(counter))
        assert distinct == list(range(distinct[0], distinct[-1] + 1)), counter
        # Sequence numbers count up by one per writer.
        for writer, numbers in sequence.items():
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), (writer, numbers)
        assert writer_id in sequence
        # Metadata is retained: a late subscriber gets it at once, flagged retained.
        late = Watcher(broker, f"{METADATA}/{WRITER}")
        try:
            seen = []
            late.collect(lambda m: seen.append(m) or True, 10, "the retained metadata")
            assert bool(seen[0][2]) and seen[0][1]["MessageType"] == "ua-metadata"
        finally:
            late.close()
        # A clean stop leaves the retained status at Error (3), as the last will would.
        stop_gateway(gw)
        watcher.collect(lambda m: m[0] == STATUS and m[1]["Status"] == 3, 20, "ua-status Error at stop")
    finally:
        watcher.close()
        stop_gateway(gw)


def test_the_stop_is_a_field_of_every_dataset_message_when_asked(gateway_bin, broker, tmp_path):
    site = "truck-14"
    env = {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__SITE__ID": site,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
        "FABRIQUE__MQTT__PAYLOAD": "ua-json",
        "FABRIQUE__MQTT__PREFIX": "opcua",
        "FABRIQUE__MQTT__STOP_IN_PAYLOAD": "true",
    }
    watcher = Watcher(broker, f"opcua/json/+/{site}/#")
    gw = start_gateway(gateway_bin, tmp_path, env, "part14-stop")
    frames: list[dict] = []
    metadata: dict[str, dict] = {}

    def on_message(message) -> bool:
        topic, doc, _retain = message
        jsonschema.validate(doc, SCHEMA)
        if topic.startswith(f"opcua/json/metadata/{site}/"):
            metadata[doc["DataSetWriterName"]] = doc
        elif topic.startswith(f"opcua/json/data/{site}/"):
            frames.extend(m for m in doc["Messages"] if "Payload" in m)
        kinds = {m["MessageType"] for m in frames}
        return {"ua-keyframe", "ua-deltaframe"} <= kinds and len(frames) >= 20

    try:
        watcher.collect(on_message, 60, "key and delta frames")
        assert all(m["Payload"]["Stop"] == {"Value": "Lens"} for m in frames), frames[:3]
        assert metadata, "no metadata"
        for name, doc in metadata.items():
            fields = {f["Name"]: f for f in doc["MetaData"]["Fields"]}
            assert fields.get("Stop", {}).get("BuiltInType") == 12, (name, sorted(fields))
    finally:
        watcher.close()
        stop_gateway(gw)
