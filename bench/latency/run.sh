#!/usr/bin/env bash
# End-to-end latency, Modbus register -> OPC UA and MQTT subscribers (BENCHMARKS.md, "Latency
# end to end"): idle, under the 100,000-tag synthetic load, and under that load with the Rust
# load client subscribed to all of it.
#
#   bench/latency/run.sh [--changes 10000] [--load-tags 100000] [any option of latency.py]
#
# The gateway is $FABRIQUE_GATEWAY_BIN if set, else target/release/fabrique-gateway built here.
# The third case needs bench/opcua-peer's load_client (built by bench/opcua-peer/run.sh, or
# `cd bench/opcua-peer && cargo build --release`); without it that case is skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
load_tags=100000
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --load-tags) load_tags="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -z "${FABRIQUE_GATEWAY_BIN:-}" ]; then
  (cd "$root" && cargo build --release --bin fabrique-gateway)
  export FABRIQUE_GATEWAY_BIN="$root/target/release/fabrique-gateway"
fi
command -v mosquitto >/dev/null || { echo "needs mosquitto: apt-get install -y mosquitto mosquitto-clients" >&2; exit 1; }
python="$root/tests/.venv/bin/python"
if [ ! -x "$python" ]; then
  python3 -m venv "$root/tests/.venv"
  "$root/tests/.venv/bin/pip" install --quiet -r "$root/tests/requirements.txt"
fi

"$python" "$here/latency.py" "${args[@]}"
"$python" "$here/latency.py" --load-tags "$load_tags" "${args[@]}"
client="$root/bench/opcua-peer/target/release/load_client"
if [ -x "$client" ]; then
  "$python" "$here/latency.py" --load-tags "$load_tags" --load-client "$client" "${args[@]}"
else
  echo "skipped: under load with the load client subscribed ($client not built)"
fi
