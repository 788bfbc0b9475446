"""The central side of a fleet: N gateways (the simulated truck at its real speed, each with its
own `site.id`) publishing to one mosquitto and writing to one VictoriaMetrics, as in
docs/central-deployment.md.

Measures over a window after a warm-up: the messages and bytes mosquitto received
(`$SYS/broker/publish/messages/received`, `$SYS/broker/bytes/received`), the rows
VictoriaMetrics inserted (`vm_rows_inserted_total` of its /metrics), and the CPU (utime+stime
from /proc) of mosquitto, VictoriaMetrics and the gateways. Per truck and per central core,
from which how many trucks one central node carries follows (an extrapolation: say so).

  tests/.venv/bin/python tests/bench/central_fleet.py [--trucks 4] [--window 60] [--warmup 20]
      [--binary target/release/fabrique-gateway]
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from fabrique_testlib import free_port  # noqa: E402
from modbus_poll import cpu_seconds, rss_mb  # noqa: E402
from peer_influx import VictoriaMetrics  # noqa: E402
from peer_mqtt import Broker  # noqa: E402


def sys_topic(broker: Broker, topic: str) -> int:
    out = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-C", "1", "-W", "5", "-t", topic],
        check=True, capture_output=True, text=True, timeout=10,
    )
    return int(out.stdout.strip())


def vm_rows(vm: VictoriaMetrics) -> int:
    with urllib.request.urlopen(f"{vm.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(int(float(m)) for m in re.findall(r'^vm_rows_inserted_total\{type="influx"\} (\S+)$', text, re.M))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trucks", type=int, default=4)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--qos", type=int, default=1, choices=[0, 1])
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "fabrique-gateway"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-central-bench-"))
    broker = Broker(work)
    broker.config.write_text(broker.config.read_text() + "sys_interval 1\n")
    vm = VictoriaMetrics(work / "vm")
    gateways: list[subprocess.Popen] = []
    try:
        broker.start()
        vm.start()
        for i in range(args.trucks):
            env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
            env.update(
                FABRIQUE__SITE__ID=f"truck-{i + 1:03d}",
                FABRIQUE__OPCUA__HOST="127.0.0.1",
                FABRIQUE__OPCUA__PORT=str(free_port()),
                FABRIQUE__HTTP__PORT=str(free_port()),
                FABRIQUE__MQTT__ENABLED="true",
                FABRIQUE__MQTT__BROKER=broker.address,
                FABRIQUE__MQTT__QOS=str(args.qos),
                FABRIQUE__MQTT__STOP_IN_PAYLOAD="true",
                FABRIQUE__INFLUXDB__ENABLED="true",
                FABRIQUE__INFLUXDB__URL=vm.url,
                FABRIQUE__STORAGE__DATA_DIR=str(work / f"data-{i}"),
                RUST_LOG="warn",
            )
            log = open(work / f"gateway-{i}.log", "wb")
            gateways.append(subprocess.Popen([args.binary, "run"], env=env, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=work))
        time.sleep(args.warmup)
        dead = [i for i, g in enumerate(gateways) if g.poll() is not None]
        if dead:
            sys.exit(f"gateways {dead} exited early, see {work}")
        assert broker.proc is not None and vm.proc is not None

        def sample():
            return (sys_topic(broker, "$SYS/broker/publish/messages/received"),
                    sys_topic(broker, "$SYS/broker/bytes/received"), vm_rows(vm),
                    cpu_seconds(broker.proc.pid), cpu_seconds(vm.proc.pid),
                    sum(cpu_seconds(g.pid) for g in gateways), time.monotonic())

        s0 = sample()
        time.sleep(args.window)
        s1 = sample()
        t = s1[-1] - s0[-1]
        msgs, nbytes, rows, bcpu, vcpu, gcpu = ((s1[k] - s0[k]) / t for k in range(6))
        n = args.trucks
        print(f"{n} trucks (simulated truck, real speed), window {t:.0f} s, MQTT QoS {args.qos}")
        print(f"mosquitto: {msgs:,.0f} msg/s ({msgs / n:,.0f} per truck), {nbytes / 1e3:,.1f} kB/s "
              f"({nbytes / n / 1e3:,.2f} kB/s per truck), CPU {bcpu * 100:.1f} %")
        print(f"VictoriaMetrics: {rows:,.0f} rows/s ({rows / n:,.0f} per truck), CPU {vcpu * 100:.1f} %, "
              f"RSS {rss_mb(vm.proc.pid):.0f} MB")
        print(f"gateways: CPU {gcpu * 100 / n:.1f} % each")
        if bcpu > 0 and vcpu > 0:
            print(f"per central core (extrapolated, linear): mosquitto {n / bcpu:,.0f} trucks, "
                  f"VictoriaMetrics {n / vcpu:,.0f} trucks")
    finally:
        for g in gateways:
            if g.poll() is None:
                g.send_signal(signal.SIGTERM)
        for g in gateways:
            try:
                g.wait(timeout=15)
            except subprocess.TimeoutExpired:
                g.kill()
        broker.kill()
        vm.stop()


if __name__ == "__main__":
    main()
