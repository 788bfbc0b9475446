#!/usr/bin/env bash
# The operational load test (not in CI: the full run takes about an hour). See RELIABILITY.md.
#
#   tests/load/run.sh --quick          # ~12 min: 30 s outages, 3-minute soak
#   tests/load/run.sh                  # full: 5-minute outages, 30-minute soak
#   tests/load/run.sh --help           # every duration and size
#
# Needs the release build (built here if missing), the test venv (tests/.venv, see tests/run),
# mosquitto and victoria-metrics (installed by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x tests/.venv/bin/python ]; then
  echo "error: tests/.venv is missing; run tests/run once (it creates it)" >&2
  exit 2
fi
for tool in mosquitto victoria-metrics; do
  if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
    echo "error: $tool is missing: apt-get install -y mosquitto mosquitto-clients victoria-metrics" >&2
    exit 2
  fi
done
cargo build --release --bin fabrique-gateway
exec tests/.venv/bin/python tests/load/loadtest.py --bin target/release/fabrique-gateway "$@"
