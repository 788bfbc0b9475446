"""Out of file descriptors, the gateway waits instead of spinning, and serves again afterwards.

The gateway runs under a 256-descriptor limit (soft = hard, so raising the soft limit at start
cannot help) and the test holds more idle OPC UA connections than that: the server accepts until
`accept()` fails with EMFILE, the rest wait in the kernel's backlog. Connections the server
closes (its 5 s Hello timeout) are opened again at once, so the descriptors stay exhausted for the
whole observation window. Before the fix, the OPC UA accept loop retried without a pause and
logged every failure: millions of lines and a core at 100 %.

The CPU bound is generous on purpose (half a core over the window, on a loaded machine a busy
loop takes a whole one): it detects a busy loop, it does not measure the gateway's speed.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import start_gateway, stop_gateway

from fabrique_testlib import connect, wait_for

PRLIMIT = shutil.which("prlimit")
LIMIT = 256
HELD = LIMIT + 200
WINDOW_S = 8.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    return (int(fields[11]) + int(fields[12])) / TICKS


class Holder:
    """Keeps `count` idle TCP connections open to `port`, reopening those the peer closes."""

    def __init__(self, port: int, count: int, pause: float = 0.05):
        self.port = port
        self.count = count
        self.pause = pause
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket | None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return None
        return s

    def _run(self) -> None:
        while not self.stop.is_set():
            alive = []
            readable = []
            if self.sockets:
                readable, _, _ = select.select(self.sockets, [], [], 0.05)
            for s in self.sockets:
                if s in readable:
                    try:
                        if s.recv(4096) == b"":
                            s.close()
                            continue
                    except BlockingIOError:
                        pass
                    except OSError:
                        s.close()
                        continue
                alive.append(s)
            while len(alive) < self.count:
                s = self._open()
                if s is None:
                    break
                alive.append(s)
            self.sockets = alive
            if not readable or self.pause > 0.05:
                time.sleep(self.pause)
        for s in self.sockets:
            s.close()

    def __enter__(self) -> "Holder":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def accept_failure_lines(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if "Failed to accept client connection" in line)


async def test_exhausted_descriptors_neither_spin_nor_flood_and_service_comes_back(gateway_bin, tmp_path):
    assert PRLIMIT, "prlimit (util-linux) is needed: apt-get install -y util-linux"
    # The gateway under `prlimit`, which execs it: the pid is the gateway's.
    gw = start_gateway(
        Path(PRLIMIT),
        tmp_path,
        {"RUST_LOG": "info"},
        "fd-limit",
        args=[f"--nofile={LIMIT}:{LIMIT}", "--", str(gateway_bin), "run"],
    )
    try:
        pid = gw.proc.pid
        with Holder(gw.port, HELD) as holder:
            # Exhausted: the gateway holds (nearly) every descriptor it may have.
            wait_for_sync(lambda: open_descriptors(pid) >= LIMIT - 2, 30, "descriptors exhausted")
            failures_before = accept_failure_lines(gw.log_path)
            cpu_before = cpu_seconds(pid)
            started = time.monotonic()
            while time.monotonic() - started < WINDOW_S:
                time.sleep(0.25)
                assert gw.proc.poll() is None, gw.log_tail()
            elapsed = time.monotonic() - started
            cpu = cpu_seconds(pid) - cpu_before
            failures = accept_failure_lines(gw.log_path) - failures_before
            still_exhausted = open_descriptors(pid) >= LIMIT - 8
            held = len(holder.sockets)
        print(f"exhausted {elapsed:.1f} s: {cpu:.2f} s CPU, {failures} accept-failure lines, {held} connections held")
        assert still_exhausted, f"descriptors were not exhausted during the window ({held} held)"
        # Once per 10 s per listener, plus the first one: a handful, not millions.
        assert failures <= 6, f"{failures} accept-failure lines in {elapsed:.1f} s\n{gw.log_tail(40)}"
        assert cpu < 0.5 * elapsed, f"{cpu:.2f} s of CPU in {elapsed:.1f} s: a busy loop"

        # The connections are gone: OPC UA and HTTP answer again.
        async def serves() -> bool:
            try:
                async with connect(gw) as opc:
                    await opc.read("Fabrique/Line/State")
                with urllib.request.urlopen(f"{gw.http_url}/health", timeout=5) as r:
                    return r.status == 200
            except Exception:  # noqa: BLE001 - not yet
                return False

        await wait_for(serves, 60, what="an OPC UA read and /health after the connections went")
    finally:
        stop_gateway(gw)


def wait_for_sync(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


async def test_a_crowd_of_http_connections_leaves_descriptors_for_opc_ua(gateway_bin, tmp_path):
    """The original failure: idle HTTP connections from one LAN host took every descriptor and
    OPC UA stopped answering. HTTP's cap is lowered at start to what the descriptor limit leaves
    after the reservation, so OPC UA sessions go on while HTTP is full."""
    assert PRLIMIT, "prlimit (util-linux) is needed: apt-get install -y util-linux"
    gw = start_gateway(
        Path(PRLIMIT),
        tmp_path,
        {
            "RUST_LOG": "info",
            # No per-client cap: one host tries to take everything, as in the report.
            "FABRIQUE__HTTP__MAX_CONNECTIONS": "100000",
            "FABRIQUE__HTTP__MAX_CONNECTIONS_PER_CLIENT": "100000",
            # Held for the whole test: no header timeout frees them meanwhile.
            "FABRIQUE__HTTP__HEADER_READ_TIMEOUT_MS": "120000",
        },
        "http-crowd",
        args=[f"--nofile={LIMIT}:{LIMIT}", "--", str(gateway_bin), "run"],
    )
    try:
        assert "`http.max_connections` lowered" in gw.log_path.read_text(errors="replace")
        with Holder(gw.http_port, LIMIT + 100, pause=0.5) as holder:
            wait_for_sync(lambda: len(holder.sockets) >= LIMIT, 30, "the HTTP connections opened")
            time.sleep(1)
            for _ in range(3):
                async with connect(gw) as opc:
                    assert await opc.read("Fabrique/Line/State")
            assert gw.proc.poll() is None
    finally:
        stop_gateway(gw)
