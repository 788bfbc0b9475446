#!/usr/bin/env bash
# Visits and survey benchmark (see BENCHMARKS.md, "Visits and survey over HTTP").
# Builds the release gateway, then runs tests/bench/visits_http.py with the given options.
set -euo pipefail
source "$(dirname "$0")/prepare.sh"
exec "$python" tests/bench/visits_http.py "$@"
