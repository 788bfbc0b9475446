"""Prints the side-by-side table of bench/opcua-peer/run.sh from its RESULT lines.

  python3 bench/opcua-peer/table.py RESULTS_FILE

Every run, then the medians per server and size, and the issue's summary table. "µs/notif." is
the server's CPU time (utime + stime) over the window divided by the notifications the client
received; "vs open62541" divides it by open62541's in the same run (same size, same run index,
started right after). "min 1 s" is the lowest one-second count of the window over the expected
count (tags x 10). "produced" (the gateway only) is the changes its synthetic device put on the
bus over the expected count, and "lagged" the bus batches a consumer missed in the window
(changes lost inside the gateway): delivered below produced with no lag is the client's or the
subscription engine's side.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict


def parse(path: str) -> list[dict]:
    rows = []
    for line in open(path, encoding="utf-8"):
        if not line.startswith("RESULT "):
            continue
        row = dict(field.split("=", 1) for field in line.split()[1:])
        for key, value in row.items():
            if key != "server":
                try:
                    row[key] = float(value)
                except ValueError:
                    row[key] = float("nan")
        rows.append(row)
    return rows


def fmt(value: float, digits: int = 0) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"


def main() -> None:
    rows = parse(sys.argv[1])
    by_key = {(r["server"], int(r["tags"]), int(r["run"])): r for r in rows}
    print("| server | tags | run | delivered / expected | server CPU | RSS (peak) | µs/notif. "
          "| vs open62541 | min 1 s | startup | create items | client CPU | produced | lagged |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    per = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["tags"], r["run"], r["server"] != "gateway")):
        tags, run = int(r["tags"]), int(r["run"])
        peer = by_key.get(("open62541", tags, run))
        relative = r["us_per_notification"] / peer["us_per_notification"] if peer else float("nan")
        r["relative"] = relative
        r["min_fraction"] = r["min_window"] / (tags * 10)
        per[(r["server"], tags)].append(r)
        print(f"| {r['server']} | {tags:,} | {run} | {r['ratio']:.3f} | {fmt(r['cpu_pct'])} % "
              f"| {fmt(r['rss_mb'])} MB ({fmt(r['peak_rss_mb'])}) | {r['us_per_notification']:.2f} "
              f"| {relative:.2f} | {r['min_fraction']:.2f} | {fmt(r['startup_ms'])} ms "
              f"| {fmt(r['create_items_ms'])} ms | {fmt(r['client_cpu_pct'])} % "
              f"| {fmt(r.get('produced', float('nan')), 3)} | {fmt(r.get('lagged', float('nan')))} |")

    def med(server: str, tags: int, key: str) -> float:
        values = [r[key] for r in per.get((server, tags), []) if r[key] == r[key]]
        return statistics.median(values) if values else float("nan")

    print()
    print("Medians:")
    print()
    print("| server | tags | runs | delivered / expected | server CPU | RSS | µs/notif. | vs open62541 "
          "| min 1 s | startup | create items |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sizes = sorted({tags for _, tags in per})
    for tags in sizes:
        for server in ("open62541", "gateway"):
            if (server, tags) not in per:
                continue
            print(f"| {server} | {tags:,} | {len(per[(server, tags)])} "
                  f"| {med(server, tags, 'ratio'):.3f} | {fmt(med(server, tags, 'cpu_pct'))} % "
                  f"| {fmt(med(server, tags, 'rss_mb'))} MB | {med(server, tags, 'us_per_notification'):.2f} "
                  f"| {med(server, tags, 'relative'):.2f} | {med(server, tags, 'min_fraction'):.2f} "
                  f"| {fmt(med(server, tags, 'startup_ms'))} ms | {fmt(med(server, tags, 'create_items_ms'))} ms |")

    print()
    print("As in issue 13 (medians; delivered, CPU, RSS):")
    print()
    print("| server | " + " | ".join(f"{t:,} tags: delivered, CPU, RSS" for t in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for server in ("open62541", "gateway"):
        cells = [f"{med(server, t, 'ratio'):.3f}, {fmt(med(server, t, 'cpu_pct'))} %, "
                 f"{fmt(med(server, t, 'rss_mb'))} MB" for t in sizes]
        print(f"| {server} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
