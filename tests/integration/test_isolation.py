"""One device hung, one unreachable, one healthy, and the simulated truck, in one gateway.

Every device runs in its own task: the two broken devices must show their trouble in their own
Status objects and nowhere else. The healthy Modbus device keeps following its peer, the
simulated machines keep moving, and the server keeps answering reads and method calls.

The hung device is a TCP listener that accepts connections and never answers: a fault no real
Modbus server produces on demand, so it is the one stand-in in this module.
"""

from __future__ import annotations

import socket
import threading

import pytest

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, connect, wait_for
from peer_modbus import PeerProcess, encode, free_port

PARTNERS = "Fabrique/Stations/Partners"
NOZZLE = "Fabrique/Stations/Printing/Printer3D/NozzleTemperature"


class HungDevice:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte back."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def block(name: str, port: int, timeout_ms: int) -> str:
    return (
        f'[[devices]]\nname = "{name}"\nstation = "Partners"\nprotocol = "modbus"\n'
        f'address = "127.0.0.1:{port}"\nunit = 1\npoll_ms = 200\ntimeout_ms = {timeout_ms}\n\n'
        '  [[devices.tags]]\n  name = "Value"\n  register = "holding:0"\n  type = "int16"\n\n'
    )


@pytest.fixture(scope="module")
def setup(gateway_bin, tmp_path_factory):
    work = tmp_path_factory.mktemp("isolation")
    peer = PeerProcess(work / "peer.log")
    peer.start()
    hung = HungDevice()
    unreachable = free_port()  # nothing listens there
    config = work / "isolation.toml"
    config.write_text(
        block("healthy", peer.port, 1000) + block("hung", hung.port, 2000) + block("gone", unreachable, 500),
        encoding="utf-8",
    )
    gw = start_gateway(gateway_bin, work, FAST_SIMULATION_ENV, "isolation", args=["--config", str(config)])
    yield gw, peer
    stop_gateway(gw)
    hung.close()
    peer.kill()


async def test_broken_devices_show_it_in_their_own_status_only(setup):
    gw, _ = setup
    async with connect(gw) as opc:
        for name, reason in (("hung", "no answer"), ("gone", "connect")):
            status = f"{PARTNERS}/{name}/Status"

            async def down(status=status):
                connected, error = await opc.read_many([f"{status}/Connected", f"{status}/LastError"])
                return connected.Value.Value is False and error.Value.Value

            error = await wait_for(down, 30, what=f"{name} reported down")
            assert reason in error.lower(), f"{name}: LastError {error!r}"
            (value,) = await opc.read_many([f"{PARTNERS}/{name}/Value"])
            assert not value.StatusCode.is_good(), f"{name}/Value must not look Good"


async def test_the_healthy_device_and_the_truck_keep_going(setup):
    gw, peer = setup
    async with connect(gw) as opc:
        healthy = f"{PARTNERS}/healthy/Value"
        for wanted in (1111, -2222):
            peer.set(1, 16, 0, encode("int16", wanted))

            async def follows(wanted=wanted):
                (dv,) = await opc.read_many([healthy])
                return dv.StatusCode.is_good() and dv.Value.Value == wanted

            await wait_for(follows, 20, what=f"healthy device showing {wanted}")

        first = await opc.read(NOZZLE)
        await wait_for(lambda: _changed(opc, NOZZLE, first), 20, what="the simulated printer still moving")

        result = await opc.submit_order("Classic", "Isolation")
        assert result.StatusCode.is_good()
        assert str(result.OutputArguments[0].Value).startswith("ORD-")


async def _changed(opc, path: str, before) -> bool:
    return await opc.read(path) != before
