#!/usr/bin/env bash
# Modbus TCP polling benchmark (see BENCHMARKS.md, "Modbus TCP polling").
# Builds the release gateway, then runs tests/bench/modbus_poll.py with the given options.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release --bin fabrique-gateway
venv="$root/tests/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/requirements.txt
fi
exec "$venv/bin/python" tests/bench/modbus_poll.py "$@"
