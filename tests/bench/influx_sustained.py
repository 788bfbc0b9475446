"""Points per second sustained by the InfluxDB sink into VictoriaMetrics (api v2).

Starts VictoriaMetrics and the release gateway on free loopback ports with N synthetic tags at
R Hz and `[influxdb]` enabled, waits for the warm-up, then measures over a window: rows
VictoriaMetrics ingested (its `vm_rows_inserted_total{type="influx"}`) per second against the
N x R produced, and the gateway's CPU share and RSS.

    tests/bench/influx_sustained.sh --tags 100000 --rate 10
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "target" / "release" / "fabrique-gateway"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rows_inserted(url: str) -> int:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    m = re.search(r'^vm_rows_inserted_total\{type="influx"\} (\d+)', text, re.M)
    return int(m.group(1)) if m else 0


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{url} did not answer")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tags", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=5000)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-influx-bench-"))
    vm_port = free_port()
    vm_url = f"http://127.0.0.1:{vm_port}"
    vm = subprocess.Popen(
        ["victoria-metrics", f"-storageDataPath={work / 'vm'}", f"-httpListenAddr=127.0.0.1:{vm_port}",
         "-retentionPeriod=100y"],
        stdout=open(work / "vm.log", "wb"), stderr=subprocess.STDOUT,
    )
    gw = None
    try:
        wait_http(f"{vm_url}/health")
        config = work / "gateway.toml"
        config.write_text(
            f'[influxdb]\nenabled = true\nurl = "{vm_url}"\nbatch_size = {args.batch}\n'
            f"queue_points = {max(1_000_000, args.batch)}\n",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
        env.update({
            "FABRIQUE__OPCUA__PORT": str(free_port()),
            "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": str(args.tags),
            "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": str(args.rate),
            "RUST_LOG": "info",
        })
        gw = subprocess.Popen([str(GATEWAY), "--config", str(config)], env=env, cwd=work,
                              stdout=open(work / "gateway.log", "wb"), stderr=subprocess.STDOUT)
        time.sleep(args.warmup)
        if gw.poll() is not None:
            sys.exit(f"gateway exited: see {work / 'gateway.log'}")
        rows0, cpu0, t0 = rows_inserted(vm_url), cpu_seconds(gw.pid), time.monotonic()
        vm_cpu0 = cpu_seconds(vm.pid)
        time.sleep(args.seconds)
        rows1, cpu1, t1 = rows_inserted(vm_url), cpu_seconds(gw.pid), time.monotonic()
        vm_cpu1 = cpu_seconds(vm.pid)
        # Each point is two rows in VictoriaMetrics: `value` and `quality`.
        points = (rows1 - rows0) / 2 / (t1 - t0)
        expected = args.tags * args.rate
        print(f"tags {args.tags} at {args.rate} Hz: expected {expected:,.0f} points/s")
        print(f"sustained into VictoriaMetrics: {points:,.0f} points/s ({100 * points / expected:.1f} %)")
        print(f"gateway CPU {100 * (cpu1 - cpu0) / (t1 - t0):.0f} % of one core, RSS {rss_mb(gw.pid):.0f} MB; "
              f"VictoriaMetrics CPU {100 * (vm_cpu1 - vm_cpu0) / (t1 - t0):.0f} % (cores: {os.cpu_count()})")
        log = (work / "gateway.log").read_text(errors="replace")
        print(f"gateway log: {log.count('fell behind')} bus resyncs, last sink line:",
              next((l for l in reversed(log.splitlines()) if "InfluxDB sink" in l), "(none yet)")[-200:])
    finally:
        for proc in (gw, vm):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


if __name__ == "__main__":
    main()
