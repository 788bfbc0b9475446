"""The operational load test: what an outside tester would do to the gateway, in one go.

    tests/load/run.sh [--quick] [--out FILE] [--only survey,mqtt,influx,churn,slowloris,soak]

Scenarios (each against the release gateway, real peers, loopback only):

1. survey    kill -9 rounds: answers posted to /api/survey, the gateway killed at a random
             moment, restarted; every answer acknowledged with 201 must be counted.
2. mqtt      mosquitto stopped for the outage, the gateway killed -9 in the middle of it and
             restarted; the 2 Hz synthetic counter T000000 must arrive with no gap.
3. influx    the same with VictoriaMetrics (InfluxDB v2 write API) as the peer.
4. churn     OPC UA sessions opened and closed (every fifth dropped without CloseSession).
5. slowloris HTTP connections that send a header byte every few seconds, while normal
             requests go on; normal requests must get through without 5xx.
6. soak      10,000 synthetic tags with an OPC UA client (a process of its own) subscribed to
             all of them, MQTT and InfluxDB on; RSS and RssAnon sampled, their slopes fitted
             (the samples go next to --out as .soak-rss.csv); HTTP polled for 5xx; the
             counter tag checked for gaps at both sinks.

Prints one summary table (Markdown) and writes it to --out. Exits 1 if a promised zero is not
zero. Timings are in the table for information: they depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import queue
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

from asyncua import Client, ua  # noqa: E402

from fabrique_testlib import (  # noqa: E402
    DEMO_OPERATOR,
    FAST_SIMULATION_ENV,
    Gateway,
    INSTANCES_URI,
    GatewayStartError,
)
from peer_influx import VictoriaMetrics  # noqa: E402
from peer_mqtt_publisher import PersistentBroker, session_subscriber  # noqa: E402
from peer_survey import Api, make_responses  # noqa: E402
from sink_counters import sink_counters  # noqa: E402
from test_monitoring import scrape  # noqa: E402

COUNTER_TAG = "T000000"
# The subscribers' filter: `+` for the site, so that a probe on another site proves it is ready.
FILTER = f"fabrique/+/Synthetic/Load/{COUNTER_TAG}"
SITE = "fabrique-hdf"


@dataclass
class Row:
    scenario: str
    measure: str
    value: object
    expected: str = ""
    ok: bool = True


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(self, scenario: str, measure: str, value, expected: str = "", ok: bool = True) -> None:
        self.rows.append(Row(scenario, measure, value, expected, ok))
        mark = "" if ok else "  <-- NOT AS EXPECTED"
        print(f"[{scenario}] {measure}: {value} {('(expected ' + expected + ')') if expected else ''}{mark}", flush=True)

    def zero(self, scenario: str, measure: str, value: int) -> None:
        self.add(scenario, measure, value, "0", value == 0)

    def table(self) -> str:
        lines = ["| scenario | measure | value | expected |", "|---|---|---:|---|"]
        for r in self.rows:
            flag = "" if r.ok else " **no**"
            lines.append(f"| {r.scenario} | {r.measure} | {r.value} | {r.expected}{flag} |")
        return "\n".join(lines)


class Gateways:
    """Gateway processes under one work dir; a restart under the same name keeps its data."""

    def __init__(self, binary: Path, workdir: Path):
        self.binary = binary
        self.workdir = workdir
        self.running: list[Gateway] = []

    def start(self, name: str, env: dict[str, str], config: str | None = None) -> Gateway:
        args = ["run"]
        if config is not None:
            path = self.workdir / f"{name}.toml"
            path.write_text(config, encoding="utf-8")
            args = ["--config", str(path), "run"]
        for _ in range(2):
            gw = Gateway(self.binary, self.workdir / f"{name}.log", env, name=name, args=args)
            gw.start()
            self.running.append(gw)
            try:
                gw.wait_ready(timeout=120)
                return gw
            except GatewayStartError:
                self.kill(gw)
        raise RuntimeError(f"gateway {name} did not start; see {self.workdir / (name + '.log')}")

    def kill(self, gw: Gateway) -> None:
        """kill -9."""
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait(timeout=30)
        if gw in self.running:
            self.running.remove(gw)

    def stop(self, gw: Gateway) -> None:
        gw.stop()
        if gw in self.running:
            self.running.remove(gw)

    def stop_all(self) -> None:
        for gw in list(self.running):
            self.kill(gw)


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory line of /proc/PID/status in MB: VmRSS, or RssAnon (the heap and stacks, what a
    leak grows) apart from RssFile (the mapped binary, which grows as its pages are touched)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB/min."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    cov = sum((t - mt) * (v - mv) for t, v in samples)
    return 60 * cov / var if var else 0.0


def gaps(values_by_life: list[list[int]]) -> int:
    """Values missing inside each gateway life's [min, max] (a restart starts a new count)."""
    missing = 0
    for values in values_by_life:
        if values:
            present = set(values)
            missing += (max(present) - min(present) + 1) - len(present)
    return missing


def mqtt_lives(messages: list[tuple[float, int]], kills: list[float]) -> list[list[int]]:
    """Split (source time, value) by the kill times."""
    bounds = [float("-inf"), *kills, float("inf")]
    return [[v for t, v in messages if lo <= t < hi] for lo, hi in zip(bounds, bounds[1:])]


def parse_ts(ts: str) -> float:
    return datetime.fromisoformat(ts[:26] + "+00:00").timestamp()


# ------------------------------------------------------------------------------------------
# 1. Survey answers across kill -9


def survey_rounds(gws: Gateways, report: Report, rounds: int) -> None:
    acknowledged = 0
    rng = random.Random(11)
    answers = make_responses(100_000, seed=3)
    sent = 0
    gw = gws.start("survey", FAST_SIMULATION_ENV)
    for _ in range(rounds):
        api = Api(gw.http_url, timeout=5)
        stop = threading.Event()
        acked = [0]

        def post() -> None:
            nonlocal sent
            while not stop.is_set():
                body = answers[sent % len(answers)]
                sent += 1
                try:
                    status, _ = api.request("POST", "/api/survey", body)
                except Exception:  # the gateway was killed under us
                    return
                if status == 201:
                    acked[0] += 1

        threads = [threading.Thread(target=post) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.0, 4.0))
        gws.kill(gw)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        acknowledged += acked[0]
        gw = gws.start("survey", FAST_SIMULATION_ENV)
    status, stats = Api(gw.http_url).request("GET", "/api/stats")
    counted = stats["survey"]["responses"] if status == 200 else -1
    gws.stop(gw)
    report.add("survey kill -9", "rounds", rounds)
    report.add("survey kill -9", "answers acknowledged (201)", acknowledged)
    report.add("survey kill -9", "answers counted after restart", counted)
    report.zero("survey kill -9", "answers lost", max(0, acknowledged - counted))


# ------------------------------------------------------------------------------------------
# 2. MQTT outage with a kill -9 in it


def mqtt_outage(gws: Gateways, report: Report, outage_s: float) -> None:
    workdir = gws.workdir / "mqtt-broker"
    workdir.mkdir(exist_ok=True)
    broker = PersistentBroker(workdir)
    broker.start()
    env = {
        **FAST_SIMULATION_ENV,
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "3",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "2",
    }
    topic = f"fabrique/{SITE}/Synthetic/Load/{COUNTER_TAG}"
    messages: list[tuple[float, int]] = []
    sub = session_subscriber(broker, FILTER, "loadtest-outage")

    def drain(sub, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                t, payload = sub.messages.get(timeout=0.5)
            except queue.Empty:
                continue
            if t == topic:
                doc = json.loads(payload)
                messages.append((parse_ts(doc["ts"]), int(doc["value"])))

    try:
        sub.wait_ready(f"fabrique/probe/Synthetic/Load/{COUNTER_TAG}")
        gw = gws.start("mqtt-outage", env)
        drain(sub, 10)
        broker.stop()
        sub.close()
        time.sleep(outage_s / 2)
        kill_at = time.time()
        gws.kill(gw)
        gw = gws.start("mqtt-outage", env)
        time.sleep(max(0.0, outage_s / 2))
        broker.start()
        sub = session_subscriber(broker, FILTER, "loadtest-outage")
        # Everything spooled (outage x 2 Hz) plus some live values.
        drain(sub, max(20.0, outage_s / 3))
        gws.stop(gw)
        drain(sub, 3)
    finally:
        sub.close()
        broker.kill()
    lives = mqtt_lives(messages, [kill_at])
    report.add("MQTT outage", f"broker down (s), kill -9 in the middle", int(outage_s))
    report.add("MQTT outage", "counter values received", len(set(messages)))
    report.zero("MQTT outage", "points lost (gaps in the counter)", gaps(lives))


# ------------------------------------------------------------------------------------------
# 3. InfluxDB (VictoriaMetrics) outage with a kill -9 in it


def influx_config(url: str, extra: str = "") -> str:
    return (
        f'[influxdb]\nenabled = true\nurl = "{url}"\napi = "v2"\ntoken_env = "FABRIQUE_LOADTEST_TOKEN"\n'
        f"batch_size = 5000\nflush_ms = 200\nqueue_points = 500000\n{extra}\n"
    )


def vm_counter(vm: VictoriaMetrics, measurement: str, start_s: float) -> list[tuple[float, int]]:
    series = vm.export(
        f'{{__name__="{measurement}_value",station="Synthetic",device="Load",tag="{COUNTER_TAG}"}}', start_s
    )
    out = []
    for s in series:
        out.extend((ts / 1000, int(v)) for ts, v in zip(s["timestamps"], s["values"]))
    return out


def influx_outage(gws: Gateways, report: Report, outage_s: float) -> None:
    workdir = gws.workdir / "victoria"
    workdir.mkdir(exist_ok=True)
    vm = VictoriaMetrics(workdir)
    vm.start()
    env = {
        **FAST_SIMULATION_ENV,
        "FABRIQUE_LOADTEST_TOKEN": "t",
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "3",
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "2",
    }
    config = influx_config(vm.url, 'measurement = "outage"')
    start = time.time() - 5
    try:
        gw = gws.start("influx-outage", env, config)
        time.sleep(10)
        vm.stop()
        time.sleep(outage_s / 2)
        kill_at = time.time()
        gws.kill(gw)
        gw = gws.start("influx-outage", env, config)
        time.sleep(outage_s / 2)
        vm.start()
        time.sleep(max(20.0, outage_s / 3))
        gws.stop(gw)
        time.sleep(3)
        points = vm_counter(vm, "outage", start)
    finally:
        vm.stop()
    lives = mqtt_lives(points, [kill_at])
    report.add("InfluxDB outage", "VictoriaMetrics down (s), kill -9 in the middle", int(outage_s))
    report.add("InfluxDB outage", "counter points stored", len(points))
    report.zero("InfluxDB outage", "points lost (gaps in the counter)", gaps(lives))


# ------------------------------------------------------------------------------------------
# 4. OPC UA session churn


async def churn_sessions(url: str, n: int, parallel: int = 4) -> tuple[int, int]:
    done = 0
    failures = 0
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal done, failures
        while True:
            async with lock:
                if done >= n:
                    return
                done += 1
                i = done
            client = Client(url, timeout=10)
            client.set_user(DEMO_OPERATOR[0])
            client.set_password(DEMO_OPERATOR[1])
            try:
                await client.connect()
                await client.nodes.server_state.read_value()
                if i % 5 == 0:
                    # Dropped without CloseSession, as a crashed client would.
                    client.uaclient.protocol.transport.abort()
                else:
                    await client.disconnect()
            except Exception:
                failures += 1

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return done, failures


def session_churn(gws: Gateways, report: Report, sessions: int) -> None:
    # A session dropped without CloseSession keeps its slot until its timeout (OPC UA lets the
    # client come back to it), so one in five of 1,000 churns would fill the default 50 slots
    # and refuse every later session with BadTooManySessions: room for all of them here, the
    # limit itself is tested in tests/integration/test_rejected_sessions.py.
    env = {**FAST_SIMULATION_ENV, "FABRIQUE__OPCUA__LIMITS__MAX_SESSIONS": str(sessions // 5 + 50)}
    gw = gws.start("churn", env)
    before = rss_mb(gw.proc.pid)
    started = time.monotonic()
    done, failures = asyncio.run(churn_sessions(gw.url, sessions))
    elapsed = time.monotonic() - started
    time.sleep(5)
    after = rss_mb(gw.proc.pid)
    # The dropped sessions expire after the session timeout (60 s): then nothing of the churn
    # may be left, neither sessions nor subscriptions.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and opcua_counts(gw)[0] != 0:
        time.sleep(2)
    sessions_left, subscriptions_left = opcua_counts(gw)
    reaped = rss_mb(gw.proc.pid)
    alive = gw.proc.poll() is None
    gws.stop(gw)
    report.add("OPC UA churn", "sessions opened and closed (1 in 5 dropped)", done)
    report.add("OPC UA churn", "duration (s)", round(elapsed))
    report.zero("OPC UA churn", "failed sessions", failures)
    report.add("OPC UA churn", "RSS before → 5 s after → dropped sessions expired (MB)", f"{before:.0f} → {after:.0f} → {reaped:.0f}")
    report.zero("OPC UA churn", "sessions left after the session timeout", int(sessions_left))
    report.zero("OPC UA churn", "subscriptions left", int(subscriptions_left))
    report.add("OPC UA churn", "gateway still running", alive, "True", alive)


def opcua_counts(gw: Gateway) -> tuple[float, float]:
    """The server's open sessions and subscriptions, from /metrics."""
    samples = scrape(gw)
    return samples[("fabrique_opcua_sessions", ())], samples[("fabrique_opcua_subscriptions", ())]


# ------------------------------------------------------------------------------------------
# 5. HTTP slowloris


def slowloris(gws: Gateways, report: Report, connections: int, seconds: float) -> None:
    # The slow and the normal clients share 127.0.0.1 here, where a real slowloris comes from
    # another host: the per-client connection cap (32 by default, tested in
    # test_http_hardening.py) would refuse the normal requests because of the slow ones.
    env = {**FAST_SIMULATION_ENV, "FABRIQUE__HTTP__MAX_CONNECTIONS_PER_CLIENT": str(connections + 16)}
    gw = gws.start("slowloris", env)
    host, port = "127.0.0.1", gw.http_port
    socks: list[socket.socket] = []
    for _ in range(connections):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /api/stats HTTP/1.1\r\nHost: gateway\r\n")
        s.setblocking(False)
        socks.append(s)
    api = Api(gw.http_url, timeout=10)
    normal = errors = fivexx = 0
    deadline = time.monotonic() + seconds
    next_byte = time.monotonic()
    while time.monotonic() < deadline:
        try:
            status, _ = api.request("GET", "/health")
            normal += 1
            fivexx += status >= 500
        except Exception:
            errors += 1
        if time.monotonic() >= next_byte:
            next_byte = time.monotonic() + 5
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass
        time.sleep(0.2)
    closed = 0
    for s in socks:
        try:
            data = s.recv(4096)
            closed += data == b"" or data.startswith(b"HTTP/1.1 408")
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    gws.stop(gw)
    report.add("HTTP slowloris", f"slow connections held for {int(seconds)} s", connections)
    report.add("HTTP slowloris", "slow connections closed by the gateway", closed)
    report.add("HTTP slowloris", "normal requests answered meanwhile", normal)
    report.zero("HTTP slowloris", "normal requests failed or 5xx", errors + fivexx)


# ------------------------------------------------------------------------------------------
# 6. Soak: 10,000 tags, OPC UA client, MQTT and InfluxDB on


# asyncua's connection supervisor reads ServerState every `watchdog_intervall` seconds and gives
# the read as long to answer (at most half the session timeout). Its default, 1 s, is what ended
# the earlier 30-minute soak after 33 s: one read slower than 1 s (a Python process busy decoding
# 10,000 notifications a second on a loaded machine) and the client declares the connection lost,
# tells its subscriptions `BadShutdown` itself (the StatusChangeNotification the gateway never
# sent) and stops publishing. 10 s still notices a dead gateway well within the soak
# (--ua-watchdog-s 1 brings the old behaviour back).
UA_WATCHDOG_S = 10.0


class Counter:
    """The soak client's account, shared with the script's process."""

    def __init__(self, ctx) -> None:
        self.n = ctx.Value("q", 0)
        # asyncua does not raise when its connection dies (its publish loop logs and retries):
        # the time of the last notification tells a client that stopped receiving.
        # CLOCK_MONOTONIC is one clock for every process of the machine.
        self.last = ctx.Value("d", time.monotonic())
        # ("status", StatusCode name) for each StatusChangeNotification, ("error", repr) if the
        # client failed.
        self.events = ctx.Queue()


class Handler:
    """asyncua's subscription handler, in the client's process: counts locally (10,000 calls a
    second), the loop below copies the count to the shared Counter."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.n = 0
        self.last = time.monotonic()

    def datachange_notification(self, node, val, data) -> None:
        self.n += 1
        self.last = time.monotonic()

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        name = status.Status.name if hasattr(status.Status, "name") else str(status.Status)
        self.counter.events.put(("status", f"{name} at {time.strftime('%H:%M:%S')}"))


async def subscribe_all(url: str, tags: int, stop, counter: Counter, watchdog_s: float) -> None:
    handler = Handler(counter)
    client = Client(url, timeout=60, watchdog_intervall=watchdog_s)
    client.set_user(DEMO_OPERATOR[0])
    client.set_password(DEMO_OPERATOR[1])
    async with client:
        ns = await client.get_namespace_index(INSTANCES_URI)
        sub = await client.create_subscription(500, handler)
        nodes = [client.get_node(ua.NodeId(f"Fabrique/Stations/Synthetic/Load/T{i:06}", ns)) for i in range(tags)]
        for i in range(0, len(nodes), 1000):
            await sub.subscribe_data_change(nodes[i : i + 1000], queuesize=1)
        while not stop.is_set():
            await asyncio.sleep(0.5)
            counter.n.value = handler.n
            counter.last.value = handler.last
        counter.n.value = handler.n
        counter.last.value = handler.last


def ua_client_process(url: str, tags: int, stop, counter: Counter, log: str, watchdog_s: float) -> None:
    """The soak's OPC UA client in a process of its own: sharing the script's interpreter (and
    its GIL) with the HTTP polling and the MQTT subscriber slowed it down for nothing."""
    logging.basicConfig(filename=log, level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The supervisor says at INFO why it gave the connection up.
    logging.getLogger("asyncua.client.client").setLevel(logging.INFO)
    try:
        asyncio.run(subscribe_all(url, tags, stop, counter, watchdog_s))
    except BaseException as e:  # reported in the table
        counter.events.put(("error", f"{type(e).__name__}: {e}"[:200]))


def soak(
    gws: Gateways, report: Report, minutes: float, tags: int, rate_hz: float, watchdog_s: float, rss_csv: Path | None
) -> None:
    broker_dir = gws.workdir / "soak-broker"
    broker_dir.mkdir(exist_ok=True)
    broker = PersistentBroker(broker_dir)
    broker.start()
    vm_dir = gws.workdir / "soak-victoria"
    vm_dir.mkdir(exist_ok=True)
    vm = VictoriaMetrics(vm_dir)
    vm.start()
    env = {
        **FAST_SIMULATION_ENV,
        "FABRIQUE_LOADTEST_TOKEN": "t",
        "FABRIQUE__MQTT__ENABLED": "true",
        "FABRIQUE__MQTT__BROKER": broker.address,
        "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": str(tags),
        "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": str(rate_hz),
    }
    topic = f"fabrique/{SITE}/Synthetic/Load/{COUNTER_TAG}"
    sub = session_subscriber(broker, FILTER, "loadtest-soak")
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    counter = Counter(ctx)
    ua_log = gws.workdir / "soak-ua-client.log"
    start = time.time() - 5
    try:
        sub.wait_ready(f"fabrique/probe/Synthetic/Load/{COUNTER_TAG}")
        gw = gws.start("soak", env, influx_config(vm.url, 'measurement = "soak"'))
        client = ctx.Process(target=ua_client_process, args=(gw.url, tags, stop, counter, str(ua_log), watchdog_s), daemon=True)
        client.start()
        api = Api(gw.http_url, timeout=10)
        samples: list[tuple[float, float]] = []
        anon: list[tuple[float, float]] = []
        fivexx = http_errors = 0
        t0 = time.monotonic()
        end = t0 + minutes * 60
        while time.monotonic() < end:
            for path in ["/health", "/api/stats", "/metrics"]:
                try:
                    status, _ = api.request("GET", path)
                    fivexx += status >= 500
                except Exception:
                    http_errors += 1
            samples.append((time.monotonic() - t0, rss_mb(gw.proc.pid)))
            anon.append((time.monotonic() - t0, rss_mb(gw.proc.pid, "RssAnon")))
            time.sleep(10)
        notifications = counter.n.value
        silent = time.monotonic() - counter.last.value
        # The sinks' own account: what they count as dropped explains a gap (or not).
        sinks = {name: sink_counters(gw, name) for name in ("Mqtt", "InfluxDB")}
        stop.set()
        client.join(timeout=30)
        if client.is_alive():
            client.kill()
        ua_events: list[tuple[str, str]] = []
        while True:
            try:
                ua_events.append(counter.events.get(timeout=1))
            except queue.Empty:
                break
        alive = gw.proc.poll() is None
        gws.stop(gw)
        time.sleep(3)
        mqtt_values: list[int] = []
        while True:
            try:
                t, payload = sub.messages.get(timeout=2)
            except queue.Empty:
                break
            if t == topic:
                mqtt_values.append(int(json.loads(payload)["value"]))
        influx_values = [v for _, v in vm_counter(vm, "soak", start)]
    finally:
        stop.set()
        sub.close()
        broker.kill()
        vm.stop()
    if rss_csv is not None:
        rss_csv.write_text(
            "seconds,rss_mb,rss_anon_mb\n" + "".join(f"{t:.0f},{v:.1f},{a:.1f}\n" for (t, v), (_, a) in zip(samples, anon)),
            encoding="utf-8",
        )
    warm_from = min(120.0, minutes * 60 / 3)
    warm = [s for s in samples if s[0] >= warm_from]
    warm_anon = [s for s in anon if s[0] >= warm_from]
    report.add("soak", "duration (min), tags, changes/s", f"{minutes:g}, {tags}, {tags * rate_hz:g}")
    report.add("soak", "OPC UA notifications received", notifications)
    ua_errors = [e for kind, e in ua_events if kind == "error"]
    statuses = [e for kind, e in ua_events if kind == "status"]
    if (ua_errors or statuses) and ua_log.exists():
        # The work dir goes with the run: what asyncua logged goes to the output.
        print("[soak] the OPC UA client's log (asyncua.client.client from INFO, the rest from WARNING), last lines:", flush=True)
        print("\n".join(ua_log.read_text(errors="replace").splitlines()[-40:]), flush=True)
    report.add("soak", "OPC UA client errors", "; ".join(ua_errors) or 0, "0", not ua_errors)
    report.add("soak", "OPC UA status changes (subscription)", "; ".join(statuses) or 0, "0", not statuses)
    report.add("soak", "OPC UA client: seconds since its last notification at the end", round(silent), "< 10", silent < 10)
    report.add("soak", "RSS first → last (MB)", f"{samples[0][1]:.0f} → {samples[-1][1]:.0f}")
    report.add("soak", "RSS slope after warm-up (MB/min)", f"{slope_per_minute(warm):+.2f}")
    report.add("soak", "RssAnon first → last (MB)", f"{anon[0][1]:.0f} → {anon[-1][1]:.0f}")
    report.add("soak", "RssAnon slope after warm-up (MB/min)", f"{slope_per_minute(warm_anon):+.2f}")
    report.zero("soak", "HTTP 5xx", fivexx)
    report.zero("soak", "HTTP requests failed", http_errors)
    for name, c in sinks.items():
        report.add("soak", f"{name} sink: sent, dropped, buffered", f"{c['Sent']}, {c['Dropped']}, {c['Buffered']}")
    report.zero("soak", "points lost at MQTT (counter gaps)", gaps([mqtt_values]))
    report.zero("soak", "points lost at InfluxDB (counter gaps)", gaps([influx_values]))
    report.add("soak", "gateway still running", alive, "True", alive)


# ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="30 s outages, 3-minute soak, 200 churns")
    parser.add_argument("--survey-rounds", type=int, default=5)
    parser.add_argument("--outage-s", type=float, default=300)
    parser.add_argument("--churns", type=int, default=1000)
    parser.add_argument("--slowloris", type=int, default=50, help="slow connections")
    parser.add_argument("--slowloris-s", type=float, default=90)
    parser.add_argument("--soak-min", type=float, default=30)
    parser.add_argument("--soak-tags", type=int, default=10_000)
    parser.add_argument("--soak-rate", type=float, default=1.0, help="changes per tag per second")
    parser.add_argument(
        "--ua-watchdog-s", type=float, default=UA_WATCHDOG_S, help="the soak client's ServerState probe interval and timeout"
    )
    parser.add_argument("--only", default="survey,mqtt,influx,churn,slowloris,soak")
    parser.add_argument("--out", type=Path, default=None, help="write the table here too")
    args = parser.parse_args()
    # asyncua warns on every session about the revised timeout: noise at 1,000 sessions.
    logging.basicConfig(level=logging.ERROR)
    if args.quick:
        args.survey_rounds, args.outage_s, args.churns = 3, 30, 200
        args.slowloris_s, args.soak_min = 30, 3
    only = set(args.only.split(","))
    # The soak's RSS samples, every 10 s, next to the table.
    rss_csv = args.out.with_suffix(".soak-rss.csv") if args.out else None
    report = Report()
    started = time.monotonic()
    with TemporaryDirectory(prefix="fabrique-load-") as tmp:
        gws = Gateways(args.bin.resolve(), Path(tmp))
        scenarios = [
            ("survey", lambda: survey_rounds(gws, report, args.survey_rounds)),
            ("mqtt", lambda: mqtt_outage(gws, report, args.outage_s)),
            ("influx", lambda: influx_outage(gws, report, args.outage_s)),
            ("churn", lambda: session_churn(gws, report, args.churns)),
            ("slowloris", lambda: slowloris(gws, report, args.slowloris, args.slowloris_s)),
            ("soak", lambda: soak(gws, report, args.soak_min, args.soak_tags, args.soak_rate, args.ua_watchdog_s, rss_csv)),
        ]
        for name, run in scenarios:
            if name not in only:
                continue
            try:
                run()
            except Exception as e:  # one broken scenario does not hide the others' results
                report.add(name, "scenario failed", f"{type(e).__name__}: {e}"[:200], "", False)
            finally:
                gws.stop_all()
    kind = "quick" if args.quick else "full"
    header = f"Load test ({kind}), {datetime.now():%Y-%m-%d %H:%M}, {time.monotonic() - started:.0f} s in all\n\n"
    table = header + report.table()
    print("\n" + table)
    if args.out:
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0 if all(r.ok for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
