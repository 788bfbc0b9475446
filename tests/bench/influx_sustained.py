"""Points per second sustained by the InfluxDB sink into VictoriaMetrics (api v2).

Starts VictoriaMetrics and the release gateway on free loopback ports with N synthetic tags at
R Hz and `[influxdb]` enabled, waits for the warm-up, then measures over a window: rows
VictoriaMetrics ingested (its `vm_rows_inserted_total{type="influx"}`) per second against the
N x R produced, and the gateway's CPU share and RSS.

    tests/bench/influx_sustained.sh --tags 100000 --rate 10
    tests/bench/influx_sustained.sh --tags 100000 --rate 1 --outage 20   # disk buffer: size, drain

`--outage S` stops VictoriaMetrics for S seconds after the window, then reports what the disk
buffer (`<data_dir>/buffer/influxdb`, read frame by frame) holds, in bytes per point, and how
long it takes to drain once VictoriaMetrics is back, while the live load goes on.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import struct
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


def spool_size(directory: Path) -> tuple[int, int]:
    """(bytes on disk, points) of the disk buffer: frames are `len u32 | weight u32 | crc u32 |
    payload`, weight = points of the batch (server/src/streams/spool.rs)."""
    total_bytes = points = 0
    for seg in sorted(directory.glob("*.seg")):
        data = seg.read_bytes()
        total_bytes += len(data)
        offset = 0
        while offset + 12 <= len(data):
            length, weight, _ = struct.unpack_from("<III", data, offset)
            if offset + 12 + length > len(data):
                break
            points += weight
            offset += 12 + length
    return total_bytes, points


def start_vm(work: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["victoria-metrics", f"-storageDataPath={work / 'vm'}", f"-httpListenAddr=127.0.0.1:{port}",
         "-retentionPeriod=100y"],
        stdout=open(work / "vm.log", "ab"), stderr=subprocess.STDOUT,
    )


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
    p.add_argument("--max-in-flight", type=int, default=4)
    p.add_argument("--gzip", action="store_true")
    p.add_argument("--outage", type=float, default=0.0)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-influx-bench-"))
    vm_port = free_port()
    vm_url = f"http://127.0.0.1:{vm_port}"
    vm = start_vm(work, vm_port)
    gw = None
    try:
        wait_http(f"{vm_url}/health")
        config = work / "gateway.toml"
        config.write_text(
            f'[influxdb]\nenabled = true\nurl = "{vm_url}"\nbatch_size = {args.batch}\n'
            f"queue_points = {max(1_000_000, args.batch)}\nmax_in_flight = {args.max_in_flight}\n"
            f"gzip = {'true' if args.gzip else 'false'}\n",
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
        print(f"tags {args.tags} at {args.rate} Hz, max_in_flight {args.max_in_flight}, gzip {args.gzip}: "
              f"expected {expected:,.0f} points/s")
        print(f"sustained into VictoriaMetrics: {points:,.0f} points/s ({100 * points / expected:.1f} %)")
        print(f"gateway CPU {100 * (cpu1 - cpu0) / (t1 - t0):.0f} % of one core, RSS {rss_mb(gw.pid):.0f} MB; "
              f"VictoriaMetrics CPU {100 * (vm_cpu1 - vm_cpu0) / (t1 - t0):.0f} % (cores: {os.cpu_count()})")
        log = (work / "gateway.log").read_text(errors="replace")
        print(f"gateway log: {log.count('fell behind')} bus resyncs, last sink line:",
              next((l for l in reversed(log.splitlines()) if "InfluxDB sink" in l), "(none yet)")[-200:])
        if args.outage > 0:
            spool = work / "data" / "buffer" / "influxdb"
            vm.terminate()
            vm.wait(timeout=30)
            time.sleep(args.outage)
            size, buffered = spool_size(spool)
            per_point = size / max(buffered, 1)
            print(f"outage of {args.outage:.0f} s: {buffered:,} points on disk in {size / 1e6:.1f} MB, "
                  f"{per_point:.1f} bytes/point; one hour at {expected:,.0f} points/s would be "
                  f"{per_point * expected * 3600 / 1e9:.1f} GB (extrapolated)")
            vm = start_vm(work, vm_port)
            wait_http(f"{vm_url}/health")
            t0 = time.monotonic()
            cpu0 = cpu_seconds(gw.pid)
            while True:
                size, left = spool_size(spool)
                if left == 0:
                    break
                if time.monotonic() - t0 > 900:
                    print(f"not drained after 900 s: {left:,} points left")
                    break
                time.sleep(0.5)
            drained = time.monotonic() - t0
            print(f"drained {buffered:,} points in {drained:.1f} s with the live load going on: "
                  f"{buffered / drained:,.0f} points/s of backlog on top of {expected:,.0f} live; "
                  f"gateway CPU {100 * (cpu_seconds(gw.pid) - cpu0) / drained:.0f} %, RSS {rss_mb(gw.pid):.0f} MB")
    finally:
        for proc in (gw, vm):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)


if __name__ == "__main__":
    main()
