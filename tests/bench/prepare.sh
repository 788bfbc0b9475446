# Sourced by the benchmark scripts: go to the repository root, build the release gateway and
# make sure the Python venv the peers run in exists. Sets $root and $python.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build --release --bin fabrique-gateway
venv="$root/tests/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r tests/requirements.txt
fi
python="$venv/bin/python"
