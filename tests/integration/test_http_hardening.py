"""The HTTP listener holds up on a LAN: slowloris and idle connections are closed on time,
connections are capped per client, and a POST that never finishes changes no counter.

The gateway runs with 1 s header and body timeouts so the test is quick; the defaults are 10 s.
"Closed on time" is checked by polling with a generous deadline, not by measuring.
"""

from __future__ import annotations

import http.client
import json
import socket
import time

from peer_survey import Api, make_responses

TIMEOUTS = {
    "FABRIQUE__HTTP__HEADER_READ_TIMEOUT_MS": "1000",
    "FABRIQUE__HTTP__BODY_READ_TIMEOUT_MS": "1000",
    "FABRIQUE__HTTP__MAX_CONNECTIONS_PER_CLIENT": "40",
}


def raw(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    s.setblocking(False)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b"" or closed_after(data, s)


def closed_after(data: bytes, s: socket.socket) -> bool:
    # The server may answer (408) before closing; what matters is the close.
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def health(port: int, source: str = "127.0.0.1") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def test_slowloris_and_idle_connections_are_closed_while_requests_go_on(gateway_factory):
    gw = gateway_factory(TIMEOUTS, name="slowloris")
    port = gw.http_port
    idle = [raw(port) for _ in range(12)]
    slow = [raw(port) for _ in range(12)]
    for s in slow:
        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    open_slow = list(slow)
    open_idle = list(idle)
    deadline = time.monotonic() + 20
    served = 0
    while (open_slow or open_idle) and time.monotonic() < deadline:
        # A header line, one byte at a time: never a complete head.
        for s in open_slow:
            try:
                s.send(b"X")
            except OSError:
                pass
        # Meanwhile, ordinary requests are served.
        assert health(port) == 200
        served += 1
        time.sleep(0.2)
        open_slow = [s for s in open_slow if not closed_by_peer(s)]
        open_idle = [s for s in open_idle if not closed_by_peer(s)]
    assert not open_slow, f"{len(open_slow)} slowloris connections still open after 20 s"
    assert not open_idle, f"{len(open_idle)} idle connections still open after 20 s"
    assert served > 0
    for s in idle + slow:
        s.close()


def test_one_client_cannot_take_every_connection(gateway_factory):
    gw = gateway_factory(
        {
            "FABRIQUE__HTTP__MAX_CONNECTIONS_PER_CLIENT": "5",
            "FABRIQUE__HTTP__HEADER_READ_TIMEOUT_MS": "30000",
        },
        name="per-client",
    )
    port = gw.http_port
    held = [raw(port) for _ in range(5)]
    try:
        # The sixth connection from the same address is closed without an answer...
        extra = raw(port)
        deadline = time.monotonic() + 10
        while not closed_by_peer(extra):
            assert time.monotonic() < deadline, "the 6th connection of one client was kept"
            time.sleep(0.05)
        extra.close()
        # ...while another address is served.
        assert health(port, source="127.0.0.2") == 200
    finally:
        for s in held:
            s.close()
    # Its connections gone, the first client is served again.
    deadline = time.monotonic() + 10
    while True:
        try:
            if health(port) == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the client was not served after closing its connections"
        time.sleep(0.1)


def test_an_aborted_or_stalled_survey_post_counts_nothing(gateway_factory):
    gw = gateway_factory(TIMEOUTS, name="aborted-post")
    api = Api(gw.http_url)
    before = api.stats()
    body = json.dumps(make_responses(1)[0]).encode()
    head = (
        f"POST /api/survey HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) + 50}\r\n\r\n"
    ).encode()
    # Aborted: half the body, then the client goes away.
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    s.sendall(head + body[:10])
    s.close()
    # Stalled: half the body, then nothing; the body-read timeout ends the request.
    s = socket.create_connection(("127.0.0.1", gw.http_port), timeout=10)
    s.sendall(head + body[:10])
    answer = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        answer += chunk
        if b"\r\n\r\n" in answer:
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # A complete answer still goes through and is the only change.
    status, _ = api.request("POST", "/api/survey", body)
    assert status == 201
    after = api.stats()
    assert after["survey"]["rejected"] == before["survey"]["rejected"]
    assert after["survey"]["responses"] == before["survey"]["responses"] + 1
