"""A fleet on a NATS server's MQTT interface instead of mosquitto (docs/central-deployment.md):
NATS (with JetStream, which its MQTT support needs) clusters, and the gateway needs nothing of
its own for it. Two trucks publish side by side, each under its own topics, and a second
gateway with a `site.id` already online is refused (the retained presence topic works there
too)."""

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

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "nats.conf"
        self.config.write_text(
            f"listen: 127.0.0.1:{free_port()}\n"
            "server_name: central-test\n"
            f'jetstream {{ store_dir: "{workdir / "js"}" }}\n'
            f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n",
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


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    n = NatsMqtt(tmp_path_factory.mktemp("nats"))
    n.start()
    yield n
    n.kill()


def env(nats: NatsMqtt, site: str) -> dict[str, str]:
    return {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__SITE__ID": site,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": nats.address,
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "1",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "2",
    }


def test_two_trucks_on_nats_and_a_duplicate_refused(gateway_bin, nats, tmp_path):
    sub = Subscriber(nats, "fabrique/+/Synthetic/Load/T000000")
    trucks = []
    try:
        sub.wait_ready("fabrique/probe/Synthetic/Load/T000000")
        trucks = [start_gateway(gateway_bin, tmp_path, env(nats, site), f"nats-{site}")
                  for site in ("truck-n1", "truck-n2")]
        seen: dict[str, list[int]] = {"truck-n1": [], "truck-n2": []}
        deadline = time.monotonic() + 60
        while min(len(v) for v in seen.values()) < 6:
            assert time.monotonic() < deadline, f"values seen: {seen}"
            topic, payload = sub.next(timeout=max(1.0, deadline - time.monotonic()))
            seen[topic.split("/")[1]].append(int(json.loads(payload)["value"]))
        for site, values in seen.items():
            assert values == sorted(values), (site, values)
        # The same id again: refused at start, through NATS's retained messages.
        dup = Gateway(gateway_bin, tmp_path / "nats-dup.log", env(nats, "truck-n1"), name="nats-dup")
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
