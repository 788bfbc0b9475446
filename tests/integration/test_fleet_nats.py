"""A fleet on a three-node NATS cluster's MQTT interface instead of mosquitto
(docs/central-deployment.md): NATS (with JetStream, which its MQTT support needs) clusters, and
the gateway needs nothing of its own for it. Two trucks publish side by side through two
different nodes, each under its own topics, read on the third node; a second gateway with a
`site.id` already online is refused on that third node (the retained presence topic crosses the
cluster too)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, Gateway, free_port
from peer_mqtt import Subscriber, tools_missing

pytestmark = pytest.mark.skipif(
    tools_missing() is not None or shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin") is None,
    reason="needs mosquitto-clients and nats-server (Debian packages; tests/install installs them)",
)


class NatsMqtt:
    """`nats-server` with JetStream and its MQTT listener, on loopback ports of its own. Looks
    like `peer_mqtt.Broker` to `Subscriber` (port, address)."""

    def __init__(self, workdir: Path, name: str = "central-test", cluster: str = "",
                 ports: tuple[int, int] | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        client_port, self.port = ports or (free_port(), free_port())
        self.config = workdir / "nats.conf"
        self.config.write_text(
            f"listen: 127.0.0.1:{client_port}\n"
            f"server_name: {name}\n"
            f'jetstream {{ store_dir: "{workdir / "js"}" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n" + cluster,
            encoding="utf-8",
        )
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin")
        log = open(self.workdir / "nats.log", "ab")
        self.proc = subprocess.Popen([binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while b"Listening for MQTT clients" not in (self.workdir / "nats.log").read_bytes():
            assert self.proc.poll() is None, (self.workdir / "nats.log").read_text()
            assert time.monotonic() < deadline, "nats-server did not open its MQTT port"
            time.sleep(0.1)

    def publish(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> None:
        args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", str(qos), "-t", topic, "-m", payload]
        subprocess.run(args + (["-r"] if retain else []), check=True, timeout=10, capture_output=True)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def cluster_of_three(workdir: Path) -> list[NatsMqtt]:
    """Three nodes routed to each other, as the reference deployment's configuration says."""
    # Nine distinct ports: free_port() may hand the same free port out twice.
    ports: list[int] = []
    while len(ports) < 9:
        port = free_port()
        if port not in ports:
            ports.append(port)
    routes = ", ".join(f'"nats://127.0.0.1:{p}"' for p in ports[:3])
    return [
        NatsMqtt(
            workdir / f"central-{i + 1}",
            f"central-{i + 1}",
            f"cluster {{ name: fleet, listen: 127.0.0.1:{ports[i]}, routes: [ {routes} ] }}\n",
            (ports[3 + i], ports[6 + i]),
        )
        for i in range(3)
    ]


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    nodes = cluster_of_three(tmp_path_factory.mktemp("nats"))
    try:
        for node in nodes:
            node.proc = subprocess.Popen(
                [shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin"), "-c", str(node.config)],
                stdout=open(node.workdir / "nats.log", "ab"), stderr=subprocess.STDOUT)
        # MQTT needs the JetStream cluster to have elected its metadata leader on every node.
        deadline = time.monotonic() + 60
        for node in nodes:
            while True:
                text = (node.workdir / "nats.log").read_bytes()
                if b"Listening for MQTT clients" in text and b"metadata leader" in text:
                    break
                assert node.proc.poll() is None, text.decode(errors="replace")
                assert time.monotonic() < deadline, f"{node.workdir.name} did not join the cluster: {text[-2000:]!r}"
                time.sleep(0.2)
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def env(nats: NatsMqtt, site: str) -> dict[str, str]:
    return {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__SITE__ID": site,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": nats.address,
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "1",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "2",
    }


def test_two_trucks_on_a_nats_cluster_and_a_duplicate_refused(gateway_bin, nats, tmp_path):
    first, second, third = nats
    sub = Subscriber(third, "fabrique/+/Synthetic/Load/T000000")
    trucks = []
    try:
        sub.wait_ready("fabrique/probe/Synthetic/Load/T000000")
        trucks = [start_gateway(gateway_bin, tmp_path, env(node, site), f"nats-{site}")
                  for node, site in ((first, "truck-n1"), (second, "truck-n2"))]
        seen: dict[str, list[int]] = {"truck-n1": [], "truck-n2": []}
        deadline = time.monotonic() + 60
        while min(len(v) for v in seen.values()) < 6:
            assert time.monotonic() < deadline, f"values seen: {seen}"
            topic, payload = sub.next(timeout=max(1.0, deadline - time.monotonic()))
            seen[topic.split("/")[1]].append(int(json.loads(payload)["value"]))
        for site, values in seen.items():
            assert values == sorted(values), (site, values)
        # The same id again, on another node: refused at start, through NATS's retained
        # messages, which the cluster shares.
        dup = Gateway(gateway_bin, tmp_path / "nats-dup.log", env(third, "truck-n1"), name="nats-dup")
        dup.start()
        try:
            assert dup.proc is not None
            assert dup.proc.wait(timeout=60) != 0, "the duplicate gateway kept running"
        finally:
            dup.stop()
        assert "site.id `truck-n1` is already online" in dup.log_path.read_text(errors="replace")
        assert all(t.proc is not None and t.proc.poll() is None for t in trucks)
    finally:
        sub.close()
        for t in trucks:
            stop_gateway(t)
