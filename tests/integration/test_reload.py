"""Reloading the configuration while a client stays subscribed.

Three Modbus devices on one real pymodbus peer, each reading its own register. The client
subscribes to device A; the configuration file is rewritten and reloaded (over HTTP, then with
SIGHUP): B goes, C comes, then the reverse. A's subscription keeps receiving changes on the same
session throughout. Invalid reloads (a bad device block, a section that needs a restart) answer
400 with the reason and leave everything as it was.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import ADMIN_TOKEN, FAST_SIMULATION_ENV, Recorder, connect, status_name, wait_for
from peer_modbus import PeerProcess, encode
from peer_survey import Api

PARTNERS = "Fabrique/Stations/Partners"
REGISTERS = {"A": 0, "B": 1, "C": 2}


def block(name: str, register: str | None = None) -> str:
    register = register or f"holding:{REGISTERS[name]}"
    return (
        f'[[devices]]\nname = "{name}"\nstation = "Partners"\nprotocol = "modbus"\n'
        f'address = "127.0.0.1:{{port}}"\nunit = 1\npoll_ms = 100\ntimeout_ms = 1000\n\n'
        f'  [[devices.tags]]\n  name = "Value"\n  register = "{register}"\n  type = "int16"\n\n'
    )


@pytest.fixture(scope="module")
def setup(gateway_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("reload")
    peer = PeerProcess(work / "peer.log")
    peer.start()
    config = work / "reload.toml"

    def write(*blocks: str, extra: str = "") -> None:
        config.write_text(extra + "".join(blocks).replace("{port}", str(peer.port)), encoding="utf-8")

    write(block("A"), block("B"))
    gw = start_gateway(gateway_bin, work, FAST_SIMULATION_ENV, "reload", args=["--config", str(config)])
    yield gw, peer, write
    stop_gateway(gw)
    peer.kill()


async def reload_over_http(gw) -> tuple[int, object]:
    api = Api(gw.http_url, token=ADMIN_TOKEN)
    return await asyncio.to_thread(api.request, "POST", "/api/admin/reload")


async def value_of(opc, device: str):
    (dv,) = await opc.read_many([f"{PARTNERS}/{device}/Value"])
    return dv


async def shows(opc, peer, device: str, wanted: int) -> None:
    peer.set(1, 16, REGISTERS[device], encode("int16", wanted))

    async def follows():
        dv = await value_of(opc, device)
        return dv.StatusCode.is_good() and dv.Value.Value == wanted

    await wait_for(follows, 20, what=f"{device}/Value showing {wanted}")


async def gone(opc, device: str) -> None:
    dv = await value_of(opc, device)
    assert status_name(dv.StatusCode) == "BadNodeIdUnknown", f"{device}: {dv.StatusCode}"
    names = {(await c.read_browse_name()).Name for c in await opc.node(PARTNERS).get_children()}
    assert device not in names, f"{device} still browsable under Partners: {names}"


async def subscription_follows(recorder: Recorder, peer, wanted: int) -> None:
    mark = recorder.mark()
    peer.set(1, 16, REGISTERS["A"], encode("int16", wanted))
    await wait_for(
        lambda: wanted in recorder.values("Fabrique/Stations/Partners/A/Value", mark),
        20,
        what=f"the subscription on A receiving {wanted}",
    )


async def test_devices_come_and_go_while_a_subscription_keeps_receiving(setup):
    gw, peer, write = setup
    async with connect(gw) as opc:
        recorder = Recorder(opc)
        subscription = await opc.client.create_subscription(50, recorder)
        await subscription.subscribe_data_change([opc.node(f"{PARTNERS}/A/Value")])
        await subscription_follows(recorder, peer, 101)
        await shows(opc, peer, "B", 201)
        session = opc.client.uaclient.protocol

        # Over HTTP: B removed, C added.
        write(block("A"), block("C"))
        status, body = await reload_over_http(gw)
        assert status == 200, body
        assert body["added"] == ["Stations/Partners/C"], body
        assert body["removed"] == ["Stations/Partners/B"], body
        assert body["changed"] == [], body
        await gone(opc, "B")
        await shows(opc, peer, "C", 301)
        await subscription_follows(recorder, peer, 102)
        _, health = await asyncio.to_thread(Api(gw.http_url).request, "GET", "/health")
        partners = {d["device"] for d in health["devices"] if d["station"] == "Partners"}
        assert partners == {"A", "C"}, health

        # With SIGHUP: C removed, B back.
        write(block("A"), block("B"))
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        await shows(opc, peer, "B", 202)
        await wait_for(lambda: _answers_unknown(opc, "C"), 20, what="C's nodes gone after SIGHUP")
        await gone(opc, "C")
        await subscription_follows(recorder, peer, 103)

        # A changed device keeps the subscription on its unchanged tag.
        write(block("A").replace("poll_ms = 100", "poll_ms = 150"), block("B"))
        status, body = await reload_over_http(gw)
        assert status == 200, body
        assert body["changed"] == ["Stations/Partners/A"], body
        await subscription_follows(recorder, peer, 104)

        assert opc.client.uaclient.protocol is session, "the client had to reconnect"
        assert "<status>" not in [path for path, _, _ in recorder.events]


async def _answers_unknown(opc, device: str) -> bool:
    return status_name((await value_of(opc, device)).StatusCode) == "BadNodeIdUnknown"


@pytest.mark.parametrize(
    "broken, reason",
    [
        ("bad register", "devices[1].tags[0].register"),
        ("restart needed", "changes to `bus.capacity` need a restart"),
        ("not TOML", "reload.toml"),
    ],
)
async def test_an_invalid_reload_is_refused_and_changes_nothing(setup, broken, reason):
    gw, peer, write = setup
    write(block("A"), block("B"))
    status, _ = await reload_over_http(gw)
    assert status == 200
    async with connect(gw) as opc:
        recorder = Recorder(opc)
        subscription = await opc.client.create_subscription(50, recorder)
        await subscription.subscribe_data_change([opc.node(f"{PARTNERS}/A/Value")])
        await subscription_follows(recorder, peer, 111)

        if broken == "bad register":
            write(block("A"), block("C", register="holding:nope"))
        elif broken == "restart needed":
            write(block("A"), block("B"), extra="[bus]\ncapacity = 77\n\n")
        else:
            write(block("A"), "[[devices]\n")
        status, body = await reload_over_http(gw)
        assert status == 400, body
        assert reason in body["error"], body
        assert "reload refused" in gw.log_tail(), "the refusal is logged"

        await shows(opc, peer, "B", 211)
        await _answers_unknown(opc, "C") or pytest.fail("C appeared from a refused reload")
        await subscription_follows(recorder, peer, 112)
    write(block("A"), block("B"))
