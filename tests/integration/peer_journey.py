"""Clients of the visitor's journey over HTTP: designs, kiosk scans, and the Server-Sent Events of
the follow and line views, read with the standard library (no SSE package)."""

from __future__ import annotations

import http.client
import json
import time

ALPHABET = set("23456789ABCDEFGHJKMNPQRSTVWXYZ")


def sse_events(base_url: str, path: str, timeout: float = 60.0):
    """Yield (event, decoded data) from an SSE endpoint until the caller stops or `timeout`."""
    host, port = base_url[len("http://") :].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    conn.request("GET", path, headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    deadline = time.monotonic() + timeout
    event, data = "message", []
    try:
        while time.monotonic() < deadline:
            line = response.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if line == "":
                if data:
                    text = "\n".join(data)
                    try:
                        yield event, json.loads(text)
                    except ValueError:
                        yield event, text
                event, data = "message", []
            elif line.startswith(":"):
                continue  # keep-alive comment
            elif line.startswith("event:"):
                event = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].lstrip())
    finally:
        conn.close()


def follow_until(base_url: str, order: str, states: set[str], timeout: float = 120.0) -> list[dict]:
    """The order's views as the follow stream sends them, up to the first in `states`."""
    views = []
    for event, view in sse_events(base_url, f"/api/follow/{order}/events", timeout):
        assert event == "order", (event, view)
        views.append(view)
        if view["state"] in states:
            return views
    raise AssertionError(f"{order} did not reach {states} in {timeout:.0f} s; last view: {views[-1:]}")


def create_design(api, model: str = "Wave", text: str = "Léa") -> dict:
    status, body = api.request("POST", "/api/designs", {"model": model, "text": text})
    assert status == 201, body
    assert len(body["code"]) == 6 and set(body["code"]) <= ALPHABET, body
    return body


def scan(api, code: str):
    return api.request("POST", "/api/kiosk/scan", {"code": code})
