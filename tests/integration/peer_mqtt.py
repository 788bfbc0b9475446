"""A real MQTT broker (mosquitto) for the MQTT adapter tests, and the device side of it.

The broker listens on 127.0.0.1 only, on a free port, with a config file in the test's tmp dir.
The device publishes with `mosquitto_pub`; commands are watched with `mosquitto_sub`
(Debian packages `mosquitto mosquitto-clients`, installed by .ci/run).
"""

from __future__ import annotations

import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from fabrique_testlib import free_port, log_tail

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def tools_missing() -> str | None:
    for tool in (MOSQUITTO, "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install the Debian packages mosquitto and mosquitto-clients"
    return None


class Broker:
    """mosquitto on 127.0.0.1:<port>; `kill()` and `start()` again keep the same port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        # `user root`: started as root, mosquitto would otherwise switch to the `mosquitto` user;
        # it has no effect when the tests run as another user.
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "user root\n",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"mosquitto did not listen on {self.address}:\n{self.log_tail()}")

    def kill(self) -> None:
        """Abrupt stop, as a crash or a power cut would do."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish as the device would. Binary payloads go through a file."""
        args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-q", str(qos), "-t", topic]
        if retain:
            args.append("-r")
        if isinstance(payload, bytes):
            path = self.workdir / "payload.bin"
            path.write_bytes(payload)
            args += ["-f", str(path)]
        else:
            args += ["-m", payload]
        subprocess.run(args, check=True, timeout=10, capture_output=True)


class Subscriber:
    """`mosquitto_sub -v` on a topic filter; every received message lands in a queue."""

    def __init__(self, broker: Broker, topic_filter: str):
        self.broker = broker
        self.topic_filter = topic_filter
        self.messages: queue.Queue[tuple[str, str]] = queue.Queue()
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-v", "-t", topic_filter],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            topic, _, payload = line.rstrip("\n").partition(" ")
            self.messages.put((topic, payload))

    def wait_ready(self, probe_topic: str, timeout: float = 10.0) -> None:
        """mosquitto_sub says nothing once subscribed: publish probes until one comes back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.broker.publish(probe_topic, "probe", qos=1)
            try:
                topic, _ = self.messages.get(timeout=0.5)
                if topic == probe_topic:
                    self.drain()
                    return
            except queue.Empty:
                pass
        raise AssertionError(f"mosquitto_sub on {self.topic_filter} never received a probe")

    def drain(self) -> None:
        while True:
            try:
                self.messages.get_nowait()
            except queue.Empty:
                return

    def next(self, timeout: float = 10.0) -> tuple[str, str]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message on {self.topic_filter} within {timeout:.0f} s") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
