"""Sparkplug B benchmark: the synthetic load (N tags at R Hz) published by the edge node into
mosquitto, read back by a subscriber that decodes every DDATA.

Measures over a window after a warm-up: the messages mosquitto received
(`$SYS/broker/publish/messages/received`), the DDATA messages and metrics the subscriber
decoded (pysparkplug's protobuf classes), the CPU (utime+stime from /proc) of the gateway and
mosquitto, and the gateway's RSS; at the end, the edge node's counters from its log. Usage
(see BENCHMARKS.md, "Sparkplug B"):

  tests/bench/sparkplug_publish.sh [--tags 10000] [--rate-hz 10] [--window 20]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from pysparkplug._protobuf import Payload

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from modbus_poll import cpu_seconds, rss_mb  # noqa: E402
from mqtt_publish import received  # noqa: E402
from peer_mqtt import Broker  # noqa: E402
from fabrique_testlib import free_port  # noqa: E402


class Counter:
    """Counts DDATA messages and their metrics (decoded), from a paho thread."""

    def __init__(self, broker: Broker):
        self.lock = threading.Lock()
        self.messages = 0
        self.metrics = 0
        self.client = paho.Client(client_id="sparkplug-bench")
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("spBv1.0/+/DDATA/#", qos=0)
        self.client.loop_start()

    def on_message(self, _client, _userdata, message) -> None:
        n = len(Payload.FromString(message.payload).metrics)
        with self.lock:
            self.messages += 1
            self.metrics += n

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.messages, self.metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "fabrique-gateway"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-sparkplug-bench-"))
    broker = Broker(work)
    broker.config.write_text(broker.config.read_text() + "sys_interval 1\n")
    gateway = None
    counter = None
    try:
        broker.start()
        counter = Counter(broker)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
        env.update(
            FABRIQUE__OPCUA__HOST="127.0.0.1",
            FABRIQUE__OPCUA__PORT=str(free_port()),
            FABRIQUE__HTTP__PORT=str(free_port()),
            FABRIQUE__SIMULATION__SYNTHETIC__TAGS=str(args.tags),
            FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ=str(args.rate_hz),
            FABRIQUE__SPARKPLUG__ENABLED="true",
            FABRIQUE__SPARKPLUG__BROKER=broker.address,
            FABRIQUE__STORAGE__DATA_DIR=str(work / "data"),
            RUST_LOG="info",
        )
        log_path = work / "gateway.log"
        log = open(log_path, "wb")
        gateway = subprocess.Popen([args.binary, "run"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=work)
        time.sleep(args.warmup)
        if gateway.poll() is not None:
            sys.exit(f"gateway exited early, see {log_path}")
        assert broker.proc is not None
        r0, (m0, k0) = received(broker), counter.snapshot()
        cpu0, bcpu0, t0 = cpu_seconds(gateway.pid), cpu_seconds(broker.proc.pid), time.monotonic()
        time.sleep(args.window)
        r1, (m1, k1) = received(broker), counter.snapshot()
        cpu1, bcpu1, t1 = cpu_seconds(gateway.pid), cpu_seconds(broker.proc.pid), time.monotonic()
        elapsed = t1 - t0
        rss, peak = rss_mb(gateway.pid), rss_mb(gateway.pid, "VmHWM")
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=15)
        stopped = [line for line in log_path.read_text(errors="replace").splitlines()
                   if "sparkplug edge node stopped" in line]
        counters = re.sub(r"\x1b\[[0-9;]*m", "", stopped[-1]) if stopped else "(no stop line)"
        print(f"{args.tags} tags at {args.rate_hz:g} Hz: planned {args.tags * args.rate_hz:,.0f} changes/s")
        print(f"broker received {(r1 - r0) / elapsed:,.0f} messages/s; subscriber decoded "
              f"{(m1 - m0) / elapsed:,.0f} DDATA/s carrying {(k1 - k0) / elapsed:,.0f} metrics/s "
              f"(window {elapsed:.0f} s)")
        print(f"gateway CPU {(cpu1 - cpu0) / elapsed * 100:.0f} %, RSS {rss:.0f} MB, peak {peak:.0f} MB; "
              f"mosquitto CPU {(bcpu1 - bcpu0) / elapsed * 100:.0f} %")
        print("edge node at stop:", counters.split("sparkplug edge node stopped", 1)[-1].strip())
    finally:
        if counter is not None:
            counter.client.loop_stop()
        if gateway is not None and gateway.poll() is None:
            gateway.kill()
        broker.kill()


if __name__ == "__main__":
    main()
