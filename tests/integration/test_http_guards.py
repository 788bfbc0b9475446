"""HTTP guards: the per-client rate limit of the public endpoints and the admin token."""

from __future__ import annotations

from fabrique_testlib import ADMIN_TOKEN
from peer_survey import Api

ANSWER = {"audience": "student", "satisfaction": 4, "view_changed": True}


def test_a_client_over_the_public_rate_gets_429_while_another_goes_on(gateway_factory):
    gw = gateway_factory(name="ratelimit", env={"FABRIQUE__HTTP__PUBLIC_RATE_PER_MINUTE": "5"})
    tablet = Api(gw.http_url, source="127.0.0.1")
    statuses = [tablet.request("POST", "/api/survey", ANSWER)[0] for _ in range(8)]
    assert statuses[:5] == [201] * 5, statuses
    assert statuses[5:] == [429] * 3, statuses
    assert int(tablet.last_headers["retry-after"]) >= 1
    # Another client (another loopback address) is not held back by the first one.
    kiosk = Api(gw.http_url, source="127.0.0.2")
    assert kiosk.request("POST", "/api/survey", ANSWER)[0] == 201
    # Only what was accepted was counted; reading is not limited.
    for _ in range(10):
        status, stats = tablet.request("GET", "/api/stats")
        assert status == 200
    assert stats["survey"]["responses"] == 6, stats["survey"]


def test_admin_endpoints_are_closed_without_a_configured_token(gateway_factory):
    gw = gateway_factory(name="notoken", env={"FABRIQUE_ADMIN_TOKEN": ""})
    stop = {"town": "Douai", "venue": "Gayant Expo", "first_day": "2026-12-14", "last_day": "2026-12-18"}
    status, answer = Api(gw.http_url, token=ADMIN_TOKEN).request("PUT", "/api/stop", stop)
    assert status == 403 and "admin_token" in answer["error"], answer
    assert Api(gw.http_url).request("GET", "/api/stop")[1]["town"] != "Douai"
