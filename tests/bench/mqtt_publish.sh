#!/usr/bin/env bash
# MQTT publisher benchmark (see BENCHMARKS.md, "MQTT publisher").
# Builds the release gateway, then runs tests/bench/mqtt_publish.py with the given options.
set -euo pipefail
source "$(dirname "$0")/prepare.sh"
exec "$python" tests/bench/mqtt_publish.py "$@"
