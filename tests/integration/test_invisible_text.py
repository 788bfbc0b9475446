"""Text that shows nothing is refused everywhere people type text: the stop's town and venue
(HTTP), a stop named in a survey answer, an order's personalisation (HTTP and OPC UA)."""

from __future__ import annotations

import pytest
from asyncua import ua

from fabrique_testlib import ADMIN_TOKEN, connect
from peer_survey import Api, make_responses

INVISIBLE = ["\ufeff", "\u202e", "\u200b\u200d", " \u2060 ", "\u0301", "Lens\u202e", "a\u0007"]


@pytest.mark.parametrize("text", INVISIBLE, ids=repr)
def test_a_stop_shows_something(gateway, text):
    admin = Api(gateway.http_url, token=ADMIN_TOKEN)
    before = admin.request("GET", "/api/stop")[1]
    for field in ("town", "venue"):
        stop = {**before, field: text}
        status, body = admin.request("PUT", "/api/stop", stop)
        assert status == 400, (field, body)
        assert field in body["error"], body
    assert admin.request("GET", "/api/stop")[1] == before


@pytest.mark.parametrize("text", INVISIBLE, ids=repr)
def test_a_survey_answer_naming_an_invisible_stop_is_rejected(gateway, text):
    api = Api(gateway.http_url)
    answer = {**make_responses(1)[0], "stop": text}
    status, body = api.request("POST", "/api/survey", answer)
    assert status == 400, body
    assert "stop" in body["error"], body


@pytest.mark.parametrize("text", INVISIBLE, ids=repr)
async def test_an_order_text_must_show_something(gateway, text):
    api = Api(gateway.http_url)
    status, body = api.request("POST", "/api/orders", {"model": "Classic", "text": text})
    assert status == 400, body
    assert "personalisation text" in body["error"], body
    async with connect(gateway) as opc:
        result = await opc.submit_order("Classic", text)
        assert result.StatusCode.value == ua.StatusCodes.BadInvalidArgument, result


def test_visible_text_still_goes_through(gateway):
    api = Api(gateway.http_url)
    status, body = api.request("POST", "/api/orders", {"model": "Classic", "text": "Zoé 👩\u200d🔧"})
    assert status == 201, body
