#!/usr/bin/env bash
# Modbus TCP polling benchmark (see BENCHMARKS.md, "Modbus TCP polling").
# Builds the release gateway, then runs tests/bench/modbus_poll.py with the given options.
set -euo pipefail
source "$(dirname "$0")/prepare.sh"
exec "$python" tests/bench/modbus_poll.py "$@"
