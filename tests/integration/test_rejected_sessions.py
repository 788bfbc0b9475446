"""Refused OPC UA sessions are counted in /metrics: too many sessions, a wrong password, an
untrusted client certificate (`fabrique_opcua_rejected_sessions_total`, and
`fabrique_opcua_security_rejected_sessions_total` for the security reasons)."""

from __future__ import annotations

import contextlib

import pytest
from asyncua import Client

from fabrique_testlib import DEMO_OPERATOR, wait_for
from test_monitoring import scrape
from test_security import App, session

TOTAL = "fabrique_opcua_rejected_sessions_total"
SECURITY = "fabrique_opcua_security_rejected_sessions_total"


def counters(gw) -> tuple[float, float]:
    samples = scrape(gw)
    return samples[(TOTAL, ())], samples[(SECURITY, ())]


async def test_refused_sessions_are_counted_by_reason(gateway_factory, tmp_path):
    gw = gateway_factory({"FABRIQUE__OPCUA__LIMITS__MAX_SESSIONS": "3"}, name="rejected-sessions")
    # The start probe's session may still be closing.
    await wait_for(lambda: scrape(gw)[("fabrique_opcua_sessions", ())] == 0, 30, what="no session open")
    assert counters(gw) == (0, 0)

    # Too many sessions: the fourth client is refused (BadTooManySessions), not a security reason.
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):
            client = Client(gw.url, timeout=10)
            client.set_user(DEMO_OPERATOR[0])
            client.set_password(DEMO_OPERATOR[1])
            await client.connect()
            stack.push_async_callback(client.disconnect)
        refused = Client(gw.url, timeout=10)
        with pytest.raises(Exception, match="TooManySessions"):
            await refused.connect()
        with contextlib.suppress(Exception):
            await refused.disconnect()
    total, security = counters(gw)
    assert total >= 1 and security == 0, (total, security)

    # A wrong password: refused at ActivateSession, a security reason.
    await wait_for(lambda: scrape(gw)[("fabrique_opcua_sessions", ())] == 0, 30, what="sessions closed")
    with pytest.raises(Exception):
        async with session(gw, None, user="operator", password="wrong"):
            pass
    total2, security2 = counters(gw)
    assert total2 >= total + 1 and security2 >= 1, (total2, security2)

    # An untrusted client certificate: refused at CreateSession, a security reason.
    stranger = App(tmp_path, "stranger")
    with pytest.raises(Exception):
        async with session(gw, stranger, "Basic256Sha256", "SignAndEncrypt", user="operator", password="operator"):
            pass
    total3, security3 = counters(gw)
    assert total3 >= total2 + 1 and security3 >= security2 + 1, (total3, security3)
