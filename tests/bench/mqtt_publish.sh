#!/usr/bin/env bash
# MQTT publisher benchmark (see BENCHMARKS.md, "MQTT publisher").
# Builds the release gateway, then runs tests/bench/mqtt_publish.py with the given options.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release --bin fabrique-gateway
venv="$root/tests/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/requirements.txt
fi
exec "$venv/bin/python" tests/bench/mqtt_publish.py "$@"
