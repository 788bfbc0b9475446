#!/usr/bin/env bash
# InfluxDB sink benchmark (see BENCHMARKS.md, "InfluxDB line protocol"): synthetic tags into a
# real VictoriaMetrics. Builds the release gateway, then runs tests/bench/influx_sustained.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release --bin fabrique-gateway
exec python3 tests/bench/influx_sustained.py "$@"
