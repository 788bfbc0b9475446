"""The central side of a fleet: N gateways (the simulated truck at its real speed, each with its
own `site.id`) publishing to one mosquitto and writing to one VictoriaMetrics, as in
docs/central-deployment.md.

With `--synthetic-trucks M` it adds M synthetic trucks: one MQTT client each (QoS 1) publishing
the gateway's JSON value messages at `--truck-rate` changes a second (the simulated truck's
rate, measured by the N gateways), and one line-protocol write a second each with the same
points, as a gateway's InfluxDB sink batches them: the central load of M more trucks without
M gateways on the machine.

Measures over a window after a warm-up: the messages and bytes mosquitto received
(`$SYS/broker/publish/messages/received`, `$SYS/broker/bytes/received`), the rows
VictoriaMetrics inserted (`vm_rows_inserted_total` of its /metrics), and the CPU (utime+stime
from /proc) of mosquitto, VictoriaMetrics and the gateways. Per truck and per central core,
from which how many trucks one central node carries follows (an extrapolation: say so).

  tests/.venv/bin/python tests/bench/central_fleet.py [--trucks 4] [--window 60] [--warmup 20]
      [--synthetic-trucks 0] [--truck-rate 23] [--binary target/release/fabrique-gateway]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
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

import paho.mqtt.client as paho  # noqa: E402
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


class SyntheticFleet:
    """M trucks' worth of MQTT messages and line-protocol writes, from a few threads."""

    def __init__(self, broker: Broker, vm: VictoriaMetrics, trucks: int, rate: float, threads: int = 4):
        self.stop = threading.Event()
        self.clients = []
        for i in range(trucks):
            c = paho.Client(client_id=f"synthetic-truck-{i}")
            c.connect("127.0.0.1", broker.port)
            c.loop_start()
            self.clients.append((f"synthetic-{i:04d}", c))
        self.rate = rate
        self.url = f"{vm.url}/api/v2/write?org=fabrique&bucket=fabrique&precision=ns"
        self.threads = [threading.Thread(target=self.run, args=(self.clients[k::threads],), daemon=True)
                        for k in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, clients) -> None:
        tick, n = 0.25, 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            n += 1
            now_ns = time.time_ns()
            per_tick = max(1, round(self.rate * tick))
            for site, client in clients:
                lines = []
                for k in range(per_tick):
                    tag = f"Tag{k:02d}"
                    payload = json.dumps({"value": n + k / 100, "quality": "Good", "status": 0,
                                          "ts": "2026-11-29T19:00:00.000000000Z", "stop": "Lens"})
                    client.publish(f"fabrique/{site}/Synthetic/Device/{tag}", payload, qos=1)
                    lines.append(f"fabrique,device=Device,site={site},station=Synthetic,stop=Lens,tag={tag} "
                                 f"value={n + k / 100},quality=0i {now_ns}")
                if n % 4 == 0:  # one write a second per truck, as the sink batches
                    try:
                        urllib.request.urlopen(urllib.request.Request(
                            self.url, data="\n".join(lines * 4).encode(), method="POST"), timeout=10).read()
                    except OSError:
                        pass
            next_at += tick
            time.sleep(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        for _, c in self.clients:
            c.loop_stop()
            c.disconnect()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trucks", type=int, default=4)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--qos", type=int, default=1, choices=[0, 1])
    ap.add_argument("--synthetic-trucks", type=int, default=0)
    ap.add_argument("--truck-rate", type=float, default=23.0)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "fabrique-gateway"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-central-bench-"))
    broker = Broker(work)
    broker.config.write_text(broker.config.read_text() + "sys_interval 1\n")
    (work / "vm").mkdir()
    vm = VictoriaMetrics(work / "vm")
    gateways: list[subprocess.Popen] = []
    fleet = None
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
            gateways.append(subprocess.Popen([str(Path(args.binary).resolve()), "run"], env=env, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=work))
        if args.synthetic_trucks:
            fleet = SyntheticFleet(broker, vm, args.synthetic_trucks, args.truck_rate)
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
        n = args.trucks + args.synthetic_trucks
        print(f"{args.trucks} gateways (simulated truck, real speed) + {args.synthetic_trucks} synthetic trucks "
              f"at {args.truck_rate:g} changes/s, window {t:.0f} s, MQTT QoS {args.qos}")
        print(f"mosquitto: {msgs:,.0f} msg/s ({msgs / n:,.0f} per truck), {nbytes / 1e3:,.1f} kB/s "
              f"({nbytes / n / 1e3:,.2f} kB/s per truck), CPU {bcpu * 100:.1f} %")
        print(f"VictoriaMetrics: {rows:,.0f} rows/s ({rows / n:,.0f} per truck), CPU {vcpu * 100:.1f} %, "
              f"RSS {rss_mb(vm.proc.pid):.0f} MB")
        print(f"gateways: CPU {gcpu * 100 / max(1, args.trucks):.1f} % each")
        if bcpu > 0 and vcpu > 0:
            print(f"per central core (extrapolated, linear): mosquitto {n / bcpu:,.0f} trucks, "
                  f"VictoriaMetrics {n / vcpu:,.0f} trucks")
    finally:
        if fleet is not None:
            fleet.close()
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
