#!/usr/bin/env bash
# InfluxDB sink benchmark (see BENCHMARKS.md, "InfluxDB line protocol"): synthetic tags into a
# real VictoriaMetrics. Builds the release gateway, then runs tests/bench/influx_sustained.py.
set -euo pipefail
source "$(dirname "$0")/prepare.sh"
exec "$python" tests/bench/influx_sustained.py "$@"
