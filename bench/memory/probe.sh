#!/usr/bin/env bash
# Where the gateway's memory goes (issue 13): the bench configuration of bench/opcua-peer
# (synthetic tags at 10 Hz, history on) at a given size, with or without the load client,
# sampling /proc/PID/smaps_rollup once a second.
#
#   bench/memory/probe.sh [--tags 100000] [--seconds 30] [--client 0|1] [--label NAME]
#                         [-- extra ENV=VALUE ... passed to the gateway]
#
# Prints one `t=S rss_mb=R anon_mb=A` line per second and a `MEMORY` summary line (the median
# and the highest RSS over the second half of the window). The gateway is $FABRIQUE_GATEWAY_BIN
# or target/release/fabrique-gateway; the load client is bench/opcua-peer's (built by its
# run.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tags=100000
seconds=30
client=0
label=gateway
while [ $# -gt 0 ]; do
  case "$1" in
    --tags) tags="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --client) client="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
extra=("$@")
gateway="${FABRIQUE_GATEWAY_BIN:-$root/target/release/fabrique-gateway}"
load_client="$root/bench/opcua-peer/target/release/load_client"
work="$(mktemp -d -t fabrique-mem-XXXXXX)"
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port="$(free_port)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
(cd "$work" && exec env \
  FABRIQUE__OPCUA__HOST=127.0.0.1 FABRIQUE__OPCUA__PORT="$port" \
  FABRIQUE__OPCUA__PKI_DIR="${TMPDIR:-/tmp}/fabrique-bench-pki" \
  FABRIQUE__HTTP__HOST=127.0.0.1 FABRIQUE__HTTP__PORT="$(free_port)" \
  FABRIQUE__SIMULATION__SYNTHETIC__TAGS="$tags" FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ=10 \
  RUST_LOG=warn "${extra[@]}" "$gateway" >"$work/gateway.log" 2>&1) &
gw=$!
pids+=("$gw")
# Wait for the OPC UA port.
for _ in $(seq 1 300); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
  sleep 0.1
done
if [ "$client" = 1 ]; then
  "$load_client" --url "opc.tcp://127.0.0.1:$port/" --server-pid "$gw" --label "$label" \
    --tags "$tags" --subscriptions 10 --rate 10 --seconds "$seconds" --warmup 5 \
    --publish-ms 100 --queue 10 >"$work/client.txt" 2>&1 &
  client_pid=$!
  pids+=("$client_pid")
fi
samples=()
t=0
# The window, and with the client until it has printed its result (its window starts after
# the monitored items are created and a warm-up).
while [ "$t" -lt "$seconds" ] || { [ "$client" = 1 ] && kill -0 "$client_pid" 2>/dev/null && [ "$t" -lt 180 ]; }; do
  t=$((t + 1))
  sleep 1
  rss=$(awk '/^Rss:/{print int($2/1024)}' /proc/$gw/smaps_rollup)
  anon=$(awk '/^Anonymous:/{print int($2/1024)}' /proc/$gw/smaps_rollup)
  echo "t=$t rss_mb=$rss anon_mb=$anon"
  samples+=("$rss")
done
if [ "$client" = 1 ]; then grep '^RESULT' "$work/client.txt" || true; fi
half=("${samples[@]:$((${#samples[@]} / 2))}")
median=$(printf '%s\n' "${half[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}')
peak=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
echo "MEMORY label=$label tags=$tags client=$client rss_median_mb=$median rss_peak_mb=$peak load=$(cut -d' ' -f1 /proc/loadavg)"
