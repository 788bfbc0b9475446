#!/usr/bin/env bash
# Sparkplug B edge node benchmark (see BENCHMARKS.md, "Sparkplug B").
# Builds the release gateway, then runs tests/bench/sparkplug_publish.py with the given options.
set -euo pipefail
source "$(dirname "$0")/prepare.sh"
exec "$python" tests/bench/sparkplug_publish.py "$@"
