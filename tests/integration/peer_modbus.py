"""A Modbus TCP peer for the integration tests and the benchmark: pymodbus 3.16 server.

Run:  python peer_modbus.py --port P --control-port C [--bench-units K --bench-registers N]

Units 1, 2 and 3 hold the same logical values (LAYOUT) encoded big/big, little-word/big-byte
and little/little; unit 4 holds COALESCE_REGISTERS holding registers plus one input register
for the coalescing test. The server counts every request it receives per (unit, function code)
and answers JSON-line commands on the control port (127.0.0.1 only):

  {"cmd": "counts"}                                   -> {"1:3": 12, ...}   unit:function
  {"cmd": "get", "unit": 1, "fc": 3, "address": 0, "count": 2}  -> {"values": [...]}
  {"cmd": "set", "unit": 1, "fc": 16, "address": 0, "values": [1, 2]}  -> {"ok": true}

With --bench-units, the peer instead serves K units of N holding registers each, all changed
every 100 ms, for tests/bench/modbus_poll.sh.

pymodbus 3.16 quirks met here: the old ModbusSlaveContext is gone (ModbusDeviceContext and
ModbusSequentialDataBlock are deprecated wrappers over SimDevice/SimData); coil and discrete
blocks need `use_bit_addressing=True`, otherwise a single-coil read and a multi-coil read of
the same address look at different bits; a request for an unknown unit raises KeyError inside
the server, answered as exception 4.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

# name, register, type, value, extra config keys (besides name/register/type)
LAYOUT: list[tuple[str, str, str, object, dict]] = [
    ("I16", "holding:0", "int16", -1234, {}),
    ("U16", "holding:1", "uint16", 54321, {}),
    ("I32", "holding:2", "int32", -123456789, {}),
    ("U32", "holding:4", "uint32", 3000000000, {}),
    ("I64", "holding:6", "int64", -1234567890123, {}),
    ("U64", "holding:10", "uint64", 12345678901234567890, {}),
    ("Pressure", "holding:14", "float32", 3.5, {"access": "readwrite", "unit": "bar",
                                               "range": {"low": 0.0, "high": 250.0}}),
    ("F64", "holding:16", "float64", -2.718281828459045, {}),
    ("Setpoint", "holding:20", "int16", 215, {"access": "readwrite", "scale": 0.1,
                                              "range": {"low": -100.0, "high": 100.0}}),
    ("Speed", "holding:21", "uint16", 30, {"access": "readwrite", "scale": 2.0, "offset": -10.0}),
    ("Label", "holding:22", "string", "PRESS-01", {"length": 5}),
    ("Flag", "holding:27", "bool", 1, {}),
    ("Flow", "input:0", "float32", 100.5, {}),
    ("Level", "input:2", "uint16", 42, {}),
    ("Total", "input:3", "uint32", 70000, {"scale": 0.5}),
    ("Running", "coil:0", "bool", True, {}),
    ("Start", "coil:1", "bool", False, {"access": "readwrite"}),
    ("Alarm", "discrete:0", "bool", False, {}),
    ("Door", "discrete:5", "bool", True, {}),
]

# unit -> (word_order, byte_order)
ORDERS = {1: ("big", "big"), 2: ("little", "big"), 3: ("little", "little")}
COALESCE_UNIT = 4
COALESCE_REGISTERS = 200
BLOCK = 300  # registers/bits per table and unit

_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
            "uint64": "Q", "float32": "f", "float64": "d"}


def encode(data_type: str, value, word_order: str = "big", byte_order: str = "big",
           length: int = 0) -> list[int]:
    """Registers holding `value` the way a device with these orders stores it."""
    if data_type == "bool":
        return [1 if value else 0]
    if data_type == "string":
        raw = str(value).encode().ljust(length * 2, b"\0")
    else:
        raw = struct.pack(">" + _FORMATS[data_type], value)
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    regs = [int.from_bytes(w, "big") for w in words]
    if word_order == "little" and data_type != "string":
        regs.reverse()
    return regs


def decode(data_type: str, regs: list[int], word_order: str = "big",
           byte_order: str = "big"):
    """Inverse of encode, for checking what the gateway wrote."""
    regs = list(regs)
    if word_order == "little" and data_type != "string":
        regs.reverse()
    raw = b"".join(r.to_bytes(2, "big")[:: -1 if byte_order == "little" else 1] for r in regs)
    if data_type == "string":
        return raw.rstrip(b"\0 ").decode()
    return struct.unpack(">" + _FORMATS[data_type], raw)[0]


def _sim_device(unit: int, registers: int = BLOCK, bits: int = BLOCK):
    """A unit with its four tables, every address from 0 valid and zero (values are loaded
    once the server runs, through the same path as writes)."""
    from pymodbus.simulator import DataType, SimData, SimDevice

    def reg_block(count: int):
        return [SimData(0, count=count, values=0, datatype=DataType.REGISTERS)]

    def bit_block(count: int):
        return [SimData(0, count=count, values=False, datatype=DataType.BITS)]

    return SimDevice(id=unit, use_bit_addressing=True,
                     simdata=(bit_block(bits), bit_block(bits), reg_block(registers),
                              reg_block(registers)))


def _preload() -> list[tuple]:
    devices = []
    for unit, (word, byte) in ORDERS.items():
        holding, inputs, coils, discrete = {}, {}, {}, {}
        for _name, register, data_type, value, extra in LAYOUT:
            table, address = register.split(":")
            address = int(address)
            if table in ("coil", "discrete"):
                (coils if table == "coil" else discrete)[address] = bool(value)
                continue
            regs = encode(data_type, value, word, byte, extra.get("length", 0))
            target = holding if table == "holding" else inputs
            for i, r in enumerate(regs):
                target[address + i] = r
        devices.append((_sim_device(unit), (holding, inputs, coils, discrete)))
    holding = {i: i for i in range(COALESCE_REGISTERS)}
    devices.append((_sim_device(COALESCE_UNIT), (holding, {0: 7}, {}, {})))
    return devices


FC_GET = {"c": 1, "d": 2, "h": 3, "i": 4}
FC_SET = {"c": 15, "d": 2, "h": 16, "i": 4}


class Peer:
    def __init__(self, port: int, control_port: int, bench_units: int, bench_registers: int):
        self.port = port
        self.control_port = control_port
        self.bench_units = bench_units
        self.bench_registers = bench_registers
        self.counts: Counter[str] = Counter()

    def trace(self, sending: bool, pdu):
        if not sending:
            self.counts[f"{pdu.dev_id}:{pdu.function_code}"] += 1
        return pdu

    async def run(self) -> None:
        from pymodbus.server import ModbusTcpServer

        if self.bench_units:
            devices = [_sim_device(u, registers=self.bench_registers, bits=16)
                       for u in range(1, self.bench_units + 1)]
            preload = []
        else:
            built = _preload()
            devices = [d for d, _ in built]
            preload = [(d.id, data) for d, data in built]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port),
                                      trace_pdu=self.trace)
        serving = asyncio.create_task(self.server.serve_forever())
        for _ in range(250):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.02)
        for unit, (holding, inputs, coils, discrete) in preload:
            rt = self.server.context.devices[unit]
            for address, value in holding.items():
                await rt.async_setValues(16, address, [value])
            for address, value in inputs.items():
                await rt.async_setValues(4, address, [value])
            for address, value in coils.items():
                await rt.async_setValues(15, address, [value])
            for address, value in discrete.items():
                await rt.async_setValues(2, address, [value])
        control = await asyncio.start_server(self.serve_control, "127.0.0.1", self.control_port)
        if self.bench_units:
            asyncio.create_task(self.churn())
        print("ready", flush=True)
        async with control:
            await serving

    async def churn(self) -> None:
        """Bench mode: every register changes every 100 ms."""
        tick = 0
        while True:
            tick += 1
            for unit in range(1, self.bench_units + 1):
                block = self.server.context.devices[unit].block["h"]
                regs = block[2]
                regs[: self.bench_registers] = [(tick + i) & 0xFFFF
                                                for i in range(self.bench_registers)]
            await asyncio.sleep(0.1)

    async def serve_control(self, reader, writer) -> None:
        try:
            while line := await reader.readline():
                request = json.loads(line)
                answer = await self.command(request)
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    async def command(self, request: dict) -> dict:
        cmd = request["cmd"]
        if cmd == "counts":
            return dict(self.counts)
        rt = self.server.context.devices[request["unit"]]
        if cmd == "get":
            values = await rt.async_getValues(request["fc"], request["address"], request["count"])
            return {"values": [int(v) if isinstance(v, bool) else v for v in values]}
        if cmd == "set":
            values = request["values"]
            if request["fc"] in (1, 2, 5, 15):
                values = [bool(v) for v in values]
            result = await rt.async_setValues(request["fc"], request["address"], values)
            return {"ok": result is None}
        return {"error": f"unknown command {cmd}"}


# ------------------------------------------------------------------------------------------
# Test-side helpers
# ------------------------------------------------------------------------------------------


# The gateway configuration of a partner press served by this peer (`--port`): one
# counter, polled every 100 ms, with a short timeout so that a stopped peer is seen quickly.
PRESS_DEVICE = """
[[devices]]
name = "press"
station = "Partners"
protocol = "modbus"
address = "127.0.0.1:{port}"
poll_ms = 100
timeout_ms = 500
"""
PRESS_CONFIG = PRESS_DEVICE + """
  [[devices.tags]]
  name = "Cycles"
  register = "holding:4"
  type = "uint32"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerProcess:
    """The peer as a subprocess that can be killed and restarted on the same ports."""

    def __init__(self, log_path: Path, port: int | None = None, extra: list[str] | None = None):
        self.port = port or free_port()
        self.control_port = free_port()
        self.log_path = log_path
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
             "--control-port", str(self.control_port), *self.extra],
            stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            self.kill()
            raise RuntimeError(f"modbus peer did not start; see {self.log_path}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def command(self, **request) -> dict:
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as s:
            s.sendall((json.dumps(request) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data)

    def counts(self) -> Counter:
        return Counter(self.command(cmd="counts"))

    def get(self, unit: int, fc: int, address: int, count: int) -> list[int]:
        return self.command(cmd="get", unit=unit, fc=fc, address=address, count=count)["values"]

    def set(self, unit: int, fc: int, address: int, values: list) -> None:
        assert self.command(cmd="set", unit=unit, fc=fc, address=address, values=values)["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--bench-units", type=int, default=0)
    parser.add_argument("--bench-registers", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    asyncio.run(Peer(args.port, args.control_port, args.bench_units, args.bench_registers).run())


if __name__ == "__main__":
    main()
