#!/usr/bin/env bash
# Side by side: the gateway and open62541 1.5, alternately, with the same OPC UA load client and
# the same settings (BENCHMARKS.md, "OPC UA side by side with open62541").
#
#   bench/opcua-peer/run.sh [--tags "10000 100000"] [--runs 3] [--seconds 20] [--warmup 5]
#                           [--subscriptions 10] [--history on|off]
#
# --history off runs the gateway without its historian (open62541 historises nothing); the
# default is on, as shipped.
# The gateway is $FABRIQUE_GATEWAY_BIN if set, else target/release/fabrique-gateway built here.
# Installs cmake, clang and libclang-dev when missing (open62541-sys builds open62541 from
# source). Each run: start the server on a free loopback port, run load_client against it, kill
# the server. Raw client output and the servers' logs go to a temporary directory (printed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

tags_list="10000 100000"
runs=3
seconds=20
warmup=5
subscriptions=10
history=on
while [ $# -gt 0 ]; do
  case "$1" in
    --tags) tags_list="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --subscriptions) subscriptions="$2"; shift 2 ;;
    --history) history="$2"; shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

# --- tools ----------------------------------------------------------------------------------
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v clang >/dev/null || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1 \
  || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (open62541-sys builds open62541 with cmake, bindgen needs libclang)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get install -y cmake clang libclang-dev \
    || { $sudo_cmd apt-get update && $sudo_cmd apt-get install -y cmake clang libclang-dev; }
fi

# --- builds ---------------------------------------------------------------------------------
(cd "$here" && cargo build --release --bins)
peer="$here/target/release/open62541_peer"
client="$here/target/release/load_client"
if [ -n "${FABRIQUE_GATEWAY_BIN:-}" ]; then
  gateway="$FABRIQUE_GATEWAY_BIN"
else
  (cd "$root" && cargo build --release --bin fabrique-gateway)
  gateway="$root/target/release/fabrique-gateway"
fi

work="$(mktemp -d -t fabrique-peer-bench-XXXXXX)"
results="$work/results.txt"
echo "gateway: $gateway"
echo "logs and raw output: $work"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

run_one() { # server tags run
  local server="$1" tags="$2" run="$3" port spawned
  port="$(free_port)"
  spawned="$(date +%s%3N)"
  metrics=()
  if [ "$server" = gateway ]; then
    http_port="$(free_port)"
    metrics=(--metrics "127.0.0.1:$http_port")
    mkdir -p "$work/gw-$tags-$run"
    # A fresh working directory (data, history), a PKI kept between runs so that startup does
    # not include making the server's key pair; everything else as shipped.
    (cd "$work/gw-$tags-$run" && exec env \
      FABRIQUE__OPCUA__HOST=127.0.0.1 FABRIQUE__OPCUA__PORT="$port" \
      FABRIQUE__OPCUA__PKI_DIR="${TMPDIR:-/tmp}/fabrique-bench-pki" \
      FABRIQUE__HTTP__HOST=127.0.0.1 FABRIQUE__HTTP__PORT="$http_port" \
      FABRIQUE__SIMULATION__SYNTHETIC__TAGS="$tags" FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ=10 \
      FABRIQUE__HISTORY__ENABLED="$([ "$history" = off ] && echo false || echo true)" \
      RUST_LOG=warn "$gateway" >"$work/gateway-$tags-$run.log" 2>&1) &
  else
    "$peer" --port "$port" --tags "$tags" --rate-hz 10 >"$work/open62541-$tags-$run.log" 2>&1 &
  fi
  server_pid=$!
  "$client" --url "opc.tcp://127.0.0.1:$port/" --server-pid "$server_pid" --label "$server" \
    --tags "$tags" --subscriptions "$subscriptions" --rate 10 --seconds "$seconds" \
    --warmup "$warmup" --publish-ms 100 --queue 10 --spawned-at-ms "$spawned" "${metrics[@]}" \
    | tee "$work/client-$server-$tags-$run.txt" | grep '^RESULT' | sed "s/\$/ run=$run/" >>"$results" \
    || echo "run failed: $server $tags tags, run $run (see $work)" >&2
  cleanup
  server_pid=""
  rm -rf "$work/gw-$tags-$run" # the gateway's history of the run can take hundreds of MB
}

for tags in $tags_list; do
  for run in $(seq 1 "$runs"); do
    # Alternately, so that a change in the machine's load affects both servers alike.
    for server in gateway open62541; do
      echo "== $server, $tags tags, run $run/$runs"
      run_one "$server" "$tags" "$run"
      tail -n 1 "$results"
    done
  done
done

echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
python3 "$here/table.py" "$results"
