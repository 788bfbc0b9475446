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


class SessionSubscriber(Subscriber):
    """`mosquitto_sub -v` with a fixed client id and no clean session: messages published
    while it is away wait for it on the broker."""

    def __init__(self, broker: Broker, topic_filter: str, client_id: str):
        self.broker = broker
        self.topic_filter = topic_filter
        self.messages: queue.Queue[tuple[str, str]] = queue.Queue()
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-v",
             "-c", "-i", client_id, "-t", topic_filter],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()


def parse_value_message(payload: str) -> dict:
    """A value message, checked against the schema of docs/streams/mqtt.md."""
    doc = json.loads(payload)
    assert set(doc) == {"value", "quality", "status", "ts"}, doc
    assert doc["quality"] in ("Good", "Uncertain", "Bad"), doc
    assert isinstance(doc["status"], int), doc
    if doc["ts"] is not None:
        # RFC 3339, UTC, nanoseconds: 2026-11-22T05:57:54.123456789Z
        assert doc["ts"].endswith("Z") and len(doc["ts"]) == 30, doc
        datetime.fromisoformat(doc["ts"][:26] + "+00:00")
    return doc
