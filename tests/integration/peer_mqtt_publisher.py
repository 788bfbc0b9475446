"""Peers for the MQTT publisher tests: mosquitto (from peer_mqtt) with a persistent store, and
subscribers that keep their session across a broker restart, so that nothing the gateway
publishes while a subscriber reconnects can slip past the test.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from datetime import datetime
from pathlib import Path

from peer_mqtt import Broker, Subscriber


class PersistentBroker(Broker):
    """mosquitto that saves its sessions on a clean stop and loads them on start."""

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "user root\n",
            encoding="utf-8",
        )

    def stop(self) -> None:
        """Clean stop (SIGTERM): the sessions and their queued messages are saved."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.kill()


def session_subscriber(broker: Broker, topic_filter: str, client_id: str) -> Subscriber:
    """`mosquitto_sub -v` with a fixed client id and no clean session: messages published
    while it is away wait for it on the broker."""
    return ArgsSubscriber(broker, topic_filter, ["-c", "-i", client_id])


def parse_value_message(payload: str) -> dict:
    """A value message, checked against the schema of the README, section "MQTT publisher"."""
    doc = json.loads(payload)
    assert set(doc) == {"value", "quality", "status", "ts"}, doc
    assert doc["quality"] in ("Good", "Uncertain", "Bad"), doc
    assert isinstance(doc["status"], int), doc
    if doc["ts"] is not None:
        # RFC 3339, UTC, nanoseconds: 2026-11-22T05:57:54.123456789Z
        assert doc["ts"].endswith("Z") and len(doc["ts"]) == 30, doc
        datetime.fromisoformat(doc["ts"][:26] + "+00:00")
    return doc


class TlsBroker(Broker):
    """mosquitto with TLS (a self-signed certificate for IP 127.0.0.1) and a password file,
    no anonymous access. `ca_file` is what the gateway must trust."""

    def __init__(self, workdir: Path, user: str, password: str):
        super().__init__(workdir)
        # A CA and a broker certificate it signs (webpki refuses a CA as the server's own).
        self.ca_file = workdir / "ca.crt"
        ca_key, key, csr, cert = (workdir / n for n in ("ca.key", "broker.key", "broker.csr", "broker.crt"))
        san = workdir / "san.ext"
        san.write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
        for args in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(ca_key),
             "-out", str(self.ca_file), "-subj", "/CN=fabrique-test-ca"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(san)],
        ):
            subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
        passwords = workdir / "passwords"
        passwords.touch()
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password],
                       check=True, capture_output=True, timeout=30)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"cafile {self.ca_file}\ncertfile {cert}\nkeyfile {key}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            "persistence false\n"
            "user root\n",
            encoding="utf-8",
        )

    def subscribe_args(self, user: str, password: str) -> list[str]:
        return ["--cafile", str(self.ca_file), "-u", user, "-P", password]


class ArgsSubscriber(Subscriber):
    """`mosquitto_sub -v` with extra arguments (TLS, credentials)."""

    def __init__(self, broker: Broker, topic_filter: str, extra: list[str]):
        self.broker = broker
        self.topic_filter = topic_filter
        self.messages: queue.Queue[tuple[str, str]] = queue.Queue()
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-v",
             *extra, "-t", topic_filter],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
