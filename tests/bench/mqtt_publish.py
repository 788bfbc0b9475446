"""MQTT publisher benchmark: the synthetic load (N tags at R Hz) published into mosquitto.

Measures, over a window after a warm-up, the PUBLISH packets mosquitto received (its
`$SYS/broker/publish/messages/received` counter, refreshed every second), the gateway's and
mosquitto's CPU (utime+stime from /proc) and the gateway's RSS; at the end, the gateway's own
counters (sent, queued, dropped) from its log. Usage (see BENCHMARKS.md, "MQTT publisher"):

  tests/bench/mqtt_publish.sh [--tags 10000] [--rate-hz 10] [--qos 1] [--window 20]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from modbus_poll import cpu_seconds, rss_mb  # noqa: E402
from peer_mqtt import Broker  # noqa: E402
from fabrique_testlib import free_port  # noqa: E402


def received(broker: Broker) -> int:
    out = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-C", "1", "-W", "5",
         "-t", "$SYS/broker/publish/messages/received"],
        check=True, capture_output=True, text=True, timeout=10,
    )
    return int(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--rate-hz", type=float, default=10.0)
    ap.add_argument("--qos", type=int, default=1, choices=[0, 1])
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "fabrique-gateway"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-mqtt-bench-"))
    broker = Broker(work)
    broker.config.write_text(broker.config.read_text() + "sys_interval 1\n")
    gateway = None
    try:
        broker.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
        env.update(
            FABRIQUE__OPCUA__HOST="127.0.0.1",
            FABRIQUE__OPCUA__PORT=str(free_port()),
            FABRIQUE__SIMULATION__SYNTHETIC__TAGS=str(args.tags),
            FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ=str(args.rate_hz),
            FABRIQUE__MQTT__ENABLED="true",
            FABRIQUE__MQTT__BROKER=broker.address,
            FABRIQUE__MQTT__QOS=str(args.qos),
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
        r0, cpu0, bcpu0, t0 = received(broker), cpu_seconds(gateway.pid), cpu_seconds(broker.proc.pid), time.monotonic()
        time.sleep(args.window)
        r1, cpu1, bcpu1, t1 = received(broker), cpu_seconds(gateway.pid), cpu_seconds(broker.proc.pid), time.monotonic()
        elapsed = t1 - t0
        rss, peak = rss_mb(gateway.pid), rss_mb(gateway.pid, "VmHWM")
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=15)
        stopped = [line for line in log_path.read_text(errors="replace").splitlines()
                   if "mqtt publisher stopped" in line]
        counters = re.sub(r"\x1b\[[0-9;]*m", "", stopped[-1]) if stopped else "(no stop line)"
        print(f"{args.tags} tags at {args.rate_hz:g} Hz, QoS {args.qos}: "
              f"planned {args.tags * args.rate_hz:,.0f} messages/s")
        print(f"broker received {(r1 - r0) / elapsed:,.0f} messages/s "
              f"(counter refreshed every 1 s, window {elapsed:.0f} s)")
        print(f"gateway CPU {(cpu1 - cpu0) / elapsed * 100:.0f} %, RSS {rss:.0f} MB, peak {peak:.0f} MB; "
              f"mosquitto CPU {(bcpu1 - bcpu0) / elapsed * 100:.0f} %")
        print("gateway at stop:", counters.split("mqtt publisher stopped", 1)[-1].strip())
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.kill()
        broker.kill()


if __name__ == "__main__":
    main()
