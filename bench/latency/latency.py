"""End-to-end latency: a Modbus register changes, when does an OPC UA and an MQTT subscriber see it?

One process holds the device and both subscribers, so that every time comes from one clock
(time.monotonic_ns):

- a pymodbus 3.16 server (the partner device) on a free loopback port, unit 1, `--registers`
  holding registers;
- the release gateway polling them as `uint16` tags of one `protocol = "modbus"` device
  (station `Bench`, device `Latency`, tags `R00`...) every `--poll-ms`, with the MQTT publisher on
  (mosquitto on a free loopback port, the gateway's default QoS 1) and, with `--load-tags N`, the
  synthetic load of N tags at 10 Hz next to it;
- an asyncua 2.1 client subscribed to the registers' variables (`--publish-ms`, sampling
  interval 0, queue 10) and a paho-mqtt client subscribed to their topics (QoS 1).

Every `--interval-ms` one register changes (round robin, so each register changes every
registers x interval ms), written into the pymodbus datastore; the time just after the write is
the change's time. A change is seen when a notification (OPC UA) or a message (MQTT) carrying
the new value arrives. Consecutive values of a register differ by more than 30,000 and repeat
only every 64 changes, so each arrival is matched to the latest write of that value before it.

The MQTT publisher's `deadband` is set to 30,000 (`--deadband`): the synthetic tags (which move
by 1 per round) are then published once at start and not again during the run, so that under
`--load-tags` mosquitto is not flooded with 1 M messages/s (BENCHMARKS.md, "MQTT publisher":
one mosquitto takes about 60,000/s at QoS 1) while every register change (> 30,000) is.

With `--load-client PATH` (bench/opcua-peer's load_client), that Rust client also subscribes to
every synthetic tag (10 subscriptions, 100 ms, sampling 0, queue 10) during the run: the gateway
then delivers the 100,000-tag load while the latency is measured.

Usage (bench/latency/run.sh builds the gateway and runs the three cases):
  tests/.venv/bin/python bench/latency/latency.py [--changes 10000] [--load-tags 100000]
      [--binary target/release/fabrique-gateway] [--load-client PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from fabrique_testlib import Gateway, free_port  # noqa: E402
from peer_mqtt import Broker  # noqa: E402

STATION, DEVICE = "Bench", "Latency"
SITE = "fabrique-hdf"
INSTANCES = "urn:fabrique-gateway:instances"


def value_of(k: int) -> int:
    """The k-th value of a register: consecutive values differ by at least 31,744, period 64."""
    return (k % 2) * 32768 + ((k // 2) % 32) * 1024


def config(modbus_port: int, registers: int, poll_ms: int) -> str:
    lines = ["[[devices]]", f'name = "{DEVICE}"', f'station = "{STATION}"', 'protocol = "modbus"',
             f'address = "127.0.0.1:{modbus_port}"', "unit = 1", f"poll_ms = {poll_ms}", ""]
    for r in range(registers):
        lines += ["  [[devices.tags]]", f'  name = "R{r:02}"', f'  register = "holding:{r}"',
                  '  type = "uint16"', ""]
    return "\n".join(lines)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


class Arrivals:
    """Arrival times per (register, value), from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[int, int, int]] = []  # (register, value, t_ns)

    def add(self, register: int, value: int, t_ns: int) -> None:
        with self.lock:
            self.items.append((register, value, t_ns))

    def count(self) -> int:
        with self.lock:
            return len(self.items)


def match(sends: dict[tuple[int, int], list[int]], arrivals: Arrivals,
          first_ns: int) -> tuple[list[float], int]:
    """Latencies in ms of the arrivals that follow a write of their value (the latest before
    them); arrivals from before the first measured write (initial values) are ignored."""
    latencies, unmatched = [], 0
    seen: set[tuple[int, int, int]] = set()
    for register, value, t in arrivals.items:
        if t < first_ns:
            continue
        times = sends.get((register, value))
        i = bisect.bisect_right(times, t) - 1 if times else -1
        if i < 0:
            unmatched += 1
            continue
        key = (register, value, times[i])
        if key in seen:  # a duplicate (QoS 1 redelivery): counted once
            continue
        seen.add(key)
        latencies.append((t - times[i]) / 1e6)
    return latencies, unmatched


async def run(args: argparse.Namespace) -> dict:
    from asyncua import Client, ua
    from paho.mqtt import client as mqtt
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    work = Path(tempfile.mkdtemp(prefix="fabrique-latency-"))
    broker = Broker(work)
    gateway = load = None
    modbus_port = free_port()
    device = SimDevice(id=1, simdata=(
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=max(16, args.registers), values=0, datatype=DataType.REGISTERS)],
        [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)]))
    server = ModbusTcpServer([device], address=("127.0.0.1", modbus_port))
    serving = asyncio.create_task(server.serve_forever())
    opc_arrivals, mqtt_arrivals = Arrivals(), Arrivals()
    mq = None
    client = None
    try:
        broker.start()
        (work / "latency.toml").write_text(config(modbus_port, args.registers, args.poll_ms))
        env = {
            "RUST_LOG": "warn",
            "FABRIQUE__MQTT__ENABLED": "true",
            "FABRIQUE__MQTT__BROKER": broker.address,
            "FABRIQUE__MQTT__DEADBAND": str(args.deadband),
            "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": str(args.load_tags),
        }
        gateway = Gateway(Path(args.binary), work / "gateway.log", env,
                          args=["--config", str(work / "latency.toml")])
        gateway.start()
        await asyncio.to_thread(gateway.wait_ready, 120.0)

        # MQTT subscriber (paho's own network thread).
        topics = {f"fabrique/{SITE}/{STATION}/{DEVICE}/R{r:02}": r for r in range(args.registers)}

        def on_message(_c, _u, msg) -> None:
            t = time.monotonic_ns()
            register = topics.get(msg.topic)
            if register is None:
                return
            value = json.loads(msg.payload).get("value")
            if isinstance(value, (int, float)):
                mqtt_arrivals.add(register, int(value), t)

        mq = mqtt.Client(client_id=f"latency-{os.getpid()}")
        mq.on_message = on_message
        mq.connect("127.0.0.1", broker.port)
        mq.subscribe(f"fabrique/{SITE}/{STATION}/{DEVICE}/+", qos=1)
        mq.loop_start()

        # OPC UA subscriber.
        client = Client(gateway.url, timeout=30)
        await client.connect()
        ns = await client.get_namespace_index(INSTANCES)
        nodes = {ua.NodeId(f"Fabrique/Stations/{STATION}/{DEVICE}/R{r:02}", ns).to_string(): r
                 for r in range(args.registers)}

        class Handler:
            def datachange_notification(self, node, val, _data) -> None:
                t = time.monotonic_ns()
                register = nodes.get(node.nodeid.to_string())
                if register is not None and isinstance(val, (int, float)):
                    opc_arrivals.add(register, int(val), t)

        subscription = await client.create_subscription(
            ua.CreateSubscriptionParameters(RequestedPublishingInterval=args.publish_ms,
                                            RequestedLifetimeCount=600,
                                            RequestedMaxKeepAliveCount=20,
                                            MaxNotificationsPerPublish=0,
                                            PublishingEnabled=True, Priority=0),
            Handler())
        await subscription.subscribe_data_change(
            [client.get_node(n) for n in nodes], sampling_interval=0, queuesize=10)

        if args.load_client:
            load = subprocess.Popen(
                [args.load_client, "--url", gateway.url, "--server-pid", str(gateway.proc.pid),
                 "--label", "load", "--tags", str(args.load_tags), "--warmup", "0",
                 "--seconds", "100000"],
                stdout=open(work / "load_client.log", "wb"), stderr=subprocess.STDOUT)
            # Its first one-second count comes once all its monitored items exist.
            for _ in range(1200):
                if b"second=" in (work / "load_client.log").read_bytes() or load.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            if load.poll() is not None:
                raise RuntimeError(f"the load client stopped, see {work / 'load_client.log'}")
        await asyncio.sleep(args.warmup)

        device_rt = server.context.devices[1]
        sends: dict[tuple[int, int], list[int]] = defaultdict(list)
        counts = [1] * args.registers  # value_of(0) = 0 is the initial value
        interval_ns = int(args.interval_ms * 1e6)
        start = time.monotonic_ns()
        first_ns = 0
        cpu0 = cpu_seconds(gateway.proc.pid)
        for n in range(args.changes):
            # On a fixed grid, so that a late loop does not slow the rate down.
            delay = (start + n * interval_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            register = n % args.registers
            value = value_of(counts[register])
            counts[register] += 1
            await device_rt.async_setValues(16, register, [value])
            t = time.monotonic_ns()
            first_ns = first_ns or t
            sends[(register, value)].append(t)
        elapsed = (time.monotonic_ns() - start) / 1e9
        cpu1 = cpu_seconds(gateway.proc.pid)
        # Stragglers: wait until both subscribers are quiet.
        for _ in range(50):
            before = (opc_arrivals.count(), mqtt_arrivals.count())
            await asyncio.sleep(0.2)
            if (opc_arrivals.count(), mqtt_arrivals.count()) == before:
                break

        result = {"changes": args.changes, "load_tags": args.load_tags,
                  "load_client": bool(args.load_client), "poll_ms": args.poll_ms,
                  "publish_ms": args.publish_ms, "changes_per_s": args.changes / elapsed,
                  "gateway_cpu_pct": (cpu1 - cpu0) / elapsed * 100}
        for name, arrivals in (("opcua", opc_arrivals), ("mqtt", mqtt_arrivals)):
            latencies, unmatched = match(sends, arrivals, first_ns)
            latencies.sort()
            result[name] = {
                "seen": len(latencies), "unmatched": unmatched, "arrivals": arrivals.count(),
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": latencies[-1] if latencies else float("nan"),
                "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
            }
        if load is not None:
            result["load_client_log"] = str(work / "load_client.log")
        return result
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(timeout=10)
        if client is not None:
            try:
                await asyncio.wait_for(client.disconnect(), 5)
            except Exception:  # noqa: BLE001 - the gateway may already be gone
                pass
        if mq is not None:
            mq.loop_stop()
            mq.disconnect()
        if gateway is not None:
            gateway.stop()
        broker.kill()
        try:
            await server.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
        serving.cancel()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--changes", type=int, default=10_000)
    ap.add_argument("--registers", type=int, default=50)
    ap.add_argument("--interval-ms", type=float, default=5.0,
                    help="time between two changes (one register each, round robin)")
    ap.add_argument("--poll-ms", type=int, default=10, help="the Modbus device's poll_ms (min 10)")
    ap.add_argument("--publish-ms", type=float, default=100.0)
    ap.add_argument("--deadband", type=float, default=30000.0)
    ap.add_argument("--load-tags", type=int, default=0)
    ap.add_argument("--load-client", default="")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--binary", default=os.environ.get(
        "FABRIQUE_GATEWAY_BIN", str(ROOT / "target" / "release" / "fabrique-gateway")))
    args = ap.parse_args()
    result = asyncio.run(run(args))
    case = (f"{args.load_tags:,} synthetic tags" if args.load_tags else "idle") + (
        " + load client" if args.load_client else "")
    print(f"case: {case}; {result['changes']} changes at {result['changes_per_s']:.0f}/s, "
          f"poll {args.poll_ms} ms, publishing {args.publish_ms:.0f} ms, "
          f"gateway CPU {result['gateway_cpu_pct']:.0f} %")
    for name in ("mqtt", "opcua"):
        r = result[name]
        print(f"  {name:6} seen {r['seen']}/{result['changes']} (unmatched {r['unmatched']}): "
              f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms, "
              f"mean {r['mean_ms']:.1f} ms")
    print("RESULT " + json.dumps({"case": case, **result}))


if __name__ == "__main__":
    main()
