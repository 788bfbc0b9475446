"""The sinks' counters as the OPC UA server shows them: `Diagnostics/Sinks/<Sink>/...`
(server/src/diagnostics.rs), read with the asyncua client from synchronous tests, and `wait_until` to poll from them."""

from __future__ import annotations

import time

from fabrique_testlib import Gateway, _run_in_thread, connect

NAMES = ("Sent", "Buffered", "BufferedOnDisk", "Dropped", "Retries", "LastError", "Connected")


def sink_counters(gw: Gateway, sink: str) -> dict:
    """{"Sent": int, "Buffered": int, "BufferedOnDisk": int, "Dropped": int, "Retries": int,
    "LastError": str, "Connected": bool}."""

    async def read() -> dict:
        async with connect(gw) as opc:
            values = await opc.read_many([f"Fabrique/Diagnostics/Sinks/{sink}/{n}" for n in NAMES])
            return {n: v.Value.Value for n, v in zip(NAMES, values)}

    return _run_in_thread(read(), 30)


def read_value(gw: Gateway, path: str):
    """One variable's value, by its path below the site (`Stations/Synthetic/Load/T000000`)."""

    async def read():
        async with connect(gw) as opc:
            return await opc.read(f"Fabrique/{path}")

    return _run_in_thread(read(), 30)


def wait_until(check, timeout: float, what: str, interval: float = 0.5):
    """Poll `check` from a synchronous test until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
