"""Visits and survey benchmark: durable writes per second over HTTP, and the cost of the
statistics at the truck's real size.

1. Seeds the database through the API: `--stops` stops (165), `--visitors` visitors (40,000) in
   groups of 24, and as many survey answers as visitors, each filed under its stop (`stop`
   field), spread over the stops' days (`at`).
2. Writes per second: C clients (keep-alive connections) posting for `--seconds` each,
   `POST /api/survey` then `POST /api/visits`; each 201 means committed with synchronous FULL
   (WAL), figures recomputed from the rows and published on the bus.
3. Statistics: the time of `GET /api/stats` (every scope: all stops, current stop, today, by
   audience, by day, by stop) and `GET /api/stats?stop=`, median and p90 of `--queries` calls.

  tests/bench/visits_http.sh [--stops 165] [--visitors 40000] [--clients 1,8,32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from fabrique_testlib import free_port  # noqa: E402
from modbus_poll import cpu_seconds, rss_mb  # noqa: E402
from peer_survey import AUDIENCES, Api  # noqa: E402


def wait_http(api: Api, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.request("GET", "/api/stop")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("gateway did not answer HTTP")


def run_clients(api: Api, clients: int, seconds: float, make_body, path: str) -> tuple[int, int]:
    """(201 answers, other answers) from `clients` threads posting for `seconds`."""
    ok = [0] * clients
    bad = [0] * clients
    stop_at = time.monotonic() + seconds

    def worker(k: int) -> None:
        i = 0
        while time.monotonic() < stop_at:
            status, _ = api.request("POST", path, make_body(k, i))
            if status == 201:
                ok[k] += 1
            else:
                bad[k] += 1
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(ok), sum(bad)


def timings(api: Api, path: str, n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = api.request("GET", path)
        samples.append((time.perf_counter() - t0) * 1000)
        assert status == 200
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stops", type=int, default=165)
    ap.add_argument("--visitors", type=int, default=40_000)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "fabrique-gateway"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fabrique-visits-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
    http_port = free_port()
    env.update(
        FABRIQUE__OPCUA__HOST="127.0.0.1",
        FABRIQUE__OPCUA__PORT=str(free_port()),
        FABRIQUE__OPCUA__PKI_DIR=str(work / "pki"),
        FABRIQUE__HTTP__PORT=str(http_port),
        FABRIQUE__STORAGE__DATA_DIR=str(work / "data"),
        # One machine plays every client: the per-client limit would measure itself.
        FABRIQUE__HTTP__PUBLIC_RATE_PER_MINUTE="0",
        RUST_LOG="warn",
    )
    log = open(work / "gateway.log", "wb")
    gateway = subprocess.Popen([args.binary], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    api = Api(f"http://127.0.0.1:{http_port}")
    try:
        wait_http(api)
        towns = [f"Stop{k:03d}" for k in range(args.stops)]
        groups = args.visitors // 24

        def seed_visit(k: int, i: int):
            n = k * 1_000_000 + i
            town = towns[n % len(towns)]
            return {"audience": AUDIENCES[n % 8], "size": 24, "stop": town,
                    "at": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T10:00:00Z"}

        def seed_answer(k: int, i: int):
            n = k * 1_000_000 + i
            return {"audience": AUDIENCES[n % 8], "satisfaction": 1 + n % 4, "view_changed": n % 3 == 0,
                    "stop": towns[n % len(towns)], "at": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T15:00:00Z"}

        t0 = time.monotonic()
        seeded = seed(api, seed_visit, "/api/visits", groups) + seed(api, seed_answer, "/api/survey", groups * 24)
        print(f"seeded {groups} groups ({groups * 24} visitors) and {groups * 24} answers over {args.stops} stops "
              f"in {time.monotonic() - t0:.1f} s ({seeded / (time.monotonic() - t0):.0f} writes/s, 32 clients)")

        stats = api.stats()
        print(f"database: {stats['visits']['visitors_total']} visitors, {stats['visits']['groups_total']} groups, "
              f"{stats['survey']['responses']} answers, {len(stats['survey']['by_stop'])} stops, "
              f"{len(stats['survey']['by_day'])} days; {os.path.getsize(work / 'data' / 'visits.sqlite') / 1e6:.1f} MB")
        for path in ["/api/stats", f"/api/stats?stop={towns[7]}"]:
            median, p90 = timings(api, path, args.queries)
            print(f"GET {path}: median {median:.1f} ms, p90 {p90:.1f} ms ({args.queries} calls)")
        for label, path, body in [
            ("survey", "/api/survey", lambda k, i: {"audience": AUDIENCES[i % 8], "satisfaction": 1 + i % 4, "view_changed": i % 2 == 0}),
            ("check-in", "/api/visits", lambda k, i: {"audience": AUDIENCES[i % 8], "size": 1 + i % 40}),
        ]:
            for clients in [int(c) for c in args.clients.split(",")]:
                cpu0 = cpu_seconds(gateway.pid)
                t0 = time.monotonic()
                ok, bad = run_clients(api, clients, args.seconds, body, path)
                elapsed = time.monotonic() - t0
                cpu = (cpu_seconds(gateway.pid) - cpu0) / elapsed * 100
                print(f"{label:8s} clients={clients:3d}: {ok / elapsed:8.0f} writes/s ({ok} in {elapsed:.1f} s, "
                      f"{bad} failed), gateway CPU {cpu:.0f} %, RSS {rss_mb(gateway.pid):.0f} MB")

    finally:
        gateway.terminate()
        gateway.wait(timeout=10)
        log.close()


def seed(api: Api, make_body, path: str, total: int) -> int:
    """Post `total` records from 32 clients."""
    clients = 32
    per = [total // clients + (1 if k < total % clients else 0) for k in range(clients)]
    failures = []

    def worker(k: int) -> None:
        for i in range(per[k]):
            status, answer = api.request("POST", path, make_body(k, i))
            if status != 201:
                failures.append(answer)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    return total


if __name__ == "__main__":
    main()
