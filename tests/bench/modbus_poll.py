"""Modbus TCP polling benchmark: the release gateway polls N registers every 100 ms from
pymodbus peers (tests/integration/peer_modbus.py in bench mode, every register changing every
100 ms) and we measure, over a window, the requests the peers answered, the points read, and the
gateway's CPU (utime+stime from /proc) and RSS.

Usage (from the repository root, after `cargo build --release`):
  tests/bench/modbus_poll.sh [--registers 10000] [--processes 4] [--units 1] [--window 20]

Registers are split evenly over processes x units devices; each device is one gateway adapter
with its own TCP connection, polling `registers/devices` uint16 tags at `--poll-ms`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from peer_modbus import PeerProcess, free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def config(peers: list[PeerProcess], units: int, per_device: int, poll_ms: int) -> str:
    out = []
    for p, peer in enumerate(peers):
        for unit in range(1, units + 1):
            out += ["[[devices]]", f'name = "bench_{p}_{unit}"', 'station = "Bench"',
                    'protocol = "modbus"', f'address = "127.0.0.1:{peer.port}"',
                    f"unit = {unit}", f"poll_ms = {poll_ms}", ""]
            for r in range(per_device):
                out += ["  [[devices.tags]]", f'  name = "R{r:05}"', f'  register = "holding:{r}"',
                        '  type = "uint16"', ""]
    return "\n".join(out)


def total_reads(peers: list[PeerProcess]) -> int:
    return sum(n for peer in peers for key, n in peer.counts().items() if key.endswith(":3"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--registers", type=int, default=10_000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--units", type=int, default=1)
    ap.add_argument("--poll-ms", type=int, default=100)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "fabrique-gateway"))
    args = ap.parse_args()

    devices = args.processes * args.units
    per_device = args.registers // devices
    work = Path(tempfile.mkdtemp(prefix="modbus-bench-"))
    peers = [PeerProcess(work / f"peer{p}.log",
                         extra=["--bench-units", str(args.units),
                                "--bench-registers", str(per_device)])
             for p in range(args.processes)]
    gateway = None
    try:
        for peer in peers:
            peer.start()
        (work / "bench.toml").write_text(config(peers, args.units, per_device, args.poll_ms))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
        env.update(FABRIQUE__OPCUA__HOST="127.0.0.1", FABRIQUE__OPCUA__PORT=str(free_port()),
                   RUST_LOG="warn")
        log = open(work / "gateway.log", "wb")
        gateway = subprocess.Popen([args.binary, "--config", str(work / "bench.toml")],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        time.sleep(args.warmup)
        if gateway.poll() is not None:
            sys.exit(f"gateway exited early, see {work / 'gateway.log'}")
        reads0, cpu0, t0 = total_reads(peers), cpu_seconds(gateway.pid), time.monotonic()
        peer_cpu0 = [cpu_seconds(p.proc.pid) for p in peers]
        time.sleep(args.window)
        reads1, cpu1, t1 = total_reads(peers), cpu_seconds(gateway.pid), time.monotonic()
        peer_cpu1 = [cpu_seconds(p.proc.pid) for p in peers]
        elapsed = t1 - t0
        requests = (reads1 - reads0) / elapsed
        reads_per_cycle = -(-per_device // 125)
        per_request = per_device / reads_per_cycle
        planned = devices * reads_per_cycle * 1000 / args.poll_ms
        print(f"registers {args.registers} in {devices} devices "
              f"({args.processes} peer processes x {args.units} units), poll {args.poll_ms} ms")
        print(f"requests/s {requests:,.0f} (planned {planned:,.0f}), "
              f"points/s {requests * per_request:,.0f} (planned {args.registers * 1000 / args.poll_ms:,.0f})")
        print(f"gateway CPU {(cpu1 - cpu0) / elapsed * 100:.0f} %, RSS {rss_mb(gateway.pid):.0f} MB, "
              f"peak {rss_mb(gateway.pid, 'VmHWM'):.0f} MB")
        print("peer CPU " + ", ".join(f"{(b - a) / elapsed * 100:.0f} %"
                                       for a, b in zip(peer_cpu0, peer_cpu1)))
    finally:
        if gateway and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=10)
        for peer in peers:
            peer.kill()


if __name__ == "__main__":
    main()
