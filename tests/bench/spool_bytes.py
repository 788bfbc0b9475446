"""Bytes per point in the store-and-forward disk buffers, for sizing `disk_buffer_mb` for a truck
offline for days (see README, "Sizing the disk buffer for a drive", and BENCHMARKS.md).

Starts the gateway (the simulated truck, plus N synthetic tags at R Hz) with the MQTT publisher,
the InfluxDB sink and the Sparkplug edge node all enabled and pointing at ports where nothing
listens: from the first failed connection everything goes to the disk buffers. After the run
it stops the gateway cleanly (what is in memory goes to disk), then divides the bytes of each
buffer's segment files by what they hold (the `buffered ... on disk` of each sink's last log
line), for the sink's own unit: MQTT messages (one per change), InfluxDB points (one per
change), Sparkplug data messages (one per device per bus batch) and the changes they carry.

  tests/.venv/bin/python tests/bench/spool_bytes.py [--tags 1000] [--rate-hz 1] [--seconds 30]
      [--binary target/debug/fabrique-gateway]
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

from fabrique_testlib import free_port  # noqa: E402

SINKS = {"mqtt": "mqtt publisher stopped", "influxdb": "InfluxDB sink stopped", "sparkplug": "sparkplug edge node stopped"}


def last_counters(log: str, marker: str) -> dict[str, str]:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in log.splitlines() if marker in line]
    if not lines:
        return {}
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--rate-hz", type=float, default=1.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--binary", default=str(ROOT / "target" / "debug" / "fabrique-gateway"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-spool-bytes-"))
    dead = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
    env.update(
        FABRIQUE__OPCUA__HOST="127.0.0.1",
        FABRIQUE__OPCUA__PORT=str(free_port()),
        FABRIQUE__HTTP__PORT=str(free_port()),
        FABRIQUE__SIMULATION__SYNTHETIC__TAGS=str(args.tags),
        FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ=str(args.rate_hz),
        FABRIQUE__MQTT__ENABLED="true",
        FABRIQUE__MQTT__BROKER=f"127.0.0.1:{dead}",
        FABRIQUE__MQTT__STOP_IN_PAYLOAD="true",
        FABRIQUE__SPARKPLUG__ENABLED="true",
        FABRIQUE__SPARKPLUG__BROKER=f"127.0.0.1:{dead}",
        FABRIQUE__INFLUXDB__ENABLED="true",
        FABRIQUE__INFLUXDB__URL=f"http://127.0.0.1:{dead}",
        FABRIQUE__STORAGE__DATA_DIR=str(work / "data"),
        RUST_LOG="info",
    )
    log_path = work / "gateway.log"
    with open(log_path, "wb") as log:
        gateway = subprocess.Popen([str(Path(args.binary).resolve()), "run"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        try:
            time.sleep(args.seconds)
            if gateway.poll() is not None:
                sys.exit(f"gateway exited early, see {log_path}")
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
        finally:
            if gateway.poll() is None:
                gateway.kill()
    text = log_path.read_text(errors="replace")
    changes = args.tags * args.rate_hz
    print(f"{args.tags} synthetic tags at {args.rate_hz:g} Hz ({changes:,.0f} changes/s) plus the "
          f"simulated truck, all sinks offline for {args.seconds:.0f} s")
    # Every change is one MQTT message: the count of changes for the per-change figures.
    changes_held = int(last_counters(text, SINKS["mqtt"]).get("buffered_disk", "0"))
    for sink, marker in SINKS.items():
        folder = work / "data" / "buffer" / sink
        size = sum(p.stat().st_size for p in folder.glob("*.seg"))
        counters = last_counters(text, marker)
        held = int(counters.get("buffered_disk", "0"))
        unit = {"mqtt": "message", "influxdb": "point", "sparkplug": "data message"}[sink]
        per = f"{size / held:,.1f} bytes per {unit}" if held else "nothing held"
        extra = ""
        if sink == "sparkplug" and held and changes_held:
            # Sparkplug groups the changes of one device and one bus batch in one message.
            extra = f"; {size / changes_held:,.1f} bytes per change (as many changes as MQTT messages)"
        print(f"{sink:9} {size / 1e6:8.2f} MB on disk, {held:>10,} {unit}s: {per}{extra}")
    if changes_held:
        print(f"changes buffered: {changes_held:,} in {args.seconds:.0f} s ({changes_held / args.seconds:,.1f}/s, "
              "start-up included)")
    print(f"work directory: {work}")


if __name__ == "__main__":
    main()
