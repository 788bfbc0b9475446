"""A partner's OPC UA server, as the gateway's OPC UA client adapter meets it in the field.

    python peer_opcua.py --port 4841 [--pad-namespaces N]

asyncua server on opc.tcp://127.0.0.1:<port>/, security None, anonymous, namespace
"urn:partner:cell". Under Objects/Cell, string node ids equal to the browse names:

    Temperature  Double   changes every 100 ms
    Counter      Int32    +1 every 100 ms
    Running      Boolean  toggles every second
    Mode         String   "AUTO" / "MANUAL", every second
    Setpoint     Double   writable; the server refuses values outside 0..100 (BadOutOfRange)
    Label        String   writable
    Pressure     Double   changes every 100 ms; for a gateway tag declared with another type
    Sensor       Double   always BadSensorFailure, no value

`--pad-namespaces N` registers N dummy namespaces first, so that "urn:partner:cell" gets
another index than on a run without it: the gateway must resolve it again on reconnection.
Prints "ready <port>" once it accepts clients.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math

from asyncua import Server, ua

NAMESPACE = "urn:partner:cell"
SETPOINT_RANGE = (0.0, 100.0)


async def serve(port: int, pad_namespaces: int) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_server_name("Partner cell")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    for i in range(pad_namespaces):
        await server.register_namespace(f"urn:partner:padding:{i}")
    ns = await server.register_namespace(NAMESPACE)

    cell = await server.nodes.objects.add_object(ua.NodeId("Cell", ns), ua.QualifiedName("Cell", ns))

    async def variable(name: str, value, variant: ua.VariantType, writable: bool = False):
        node = await cell.add_variable(
            ua.NodeId(name, ns), ua.QualifiedName(name, ns), ua.Variant(value, variant)
        )
        if writable:
            await node.set_writable()
        return node

    temperature = await variable("Temperature", 20.0, ua.VariantType.Double)
    counter = await variable("Counter", 0, ua.VariantType.Int32)
    running = await variable("Running", False, ua.VariantType.Boolean)
    mode = await variable("Mode", "AUTO", ua.VariantType.String)
    setpoint = await variable("Setpoint", 50.0, ua.VariantType.Double, writable=True)
    await variable("Label", "cell-1", ua.VariantType.String, writable=True)
    pressure = await variable("Pressure", 1.5, ua.VariantType.Double)
    sensor = await variable("Sensor", 0.0, ua.VariantType.Double)
    await sensor.write_value(ua.DataValue(StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure)))

    # The partner's own limit check: a client write outside the range is refused.
    aspace = server.iserver.aspace
    plain_write = aspace.write_attribute_value
    low, high = SETPOINT_RANGE

    async def checked_write(nodeid, attr, value):
        if nodeid == setpoint.nodeid and attr == ua.AttributeIds.Value and value.Value is not None:
            x = value.Value.Value
            if isinstance(x, (int, float)) and not (low <= x <= high):
                return ua.StatusCode(ua.StatusCodes.BadOutOfRange)
        return await plain_write(nodeid, attr, value)

    aspace.write_attribute_value = checked_write

    async with server:
        print(f"ready {port}", flush=True)
        tick = 0
        while True:
            await asyncio.sleep(0.1)
            tick += 1
            await temperature.write_value(round(20.0 + 5.0 * math.sin(tick / 10.0), 3))
            await counter.write_value(ua.Variant(tick, ua.VariantType.Int32))
            await pressure.write_value(1.5 + (tick % 10) / 100.0)
            if tick % 10 == 0:
                await running.write_value(tick % 20 == 0)
                await mode.write_value("AUTO" if tick % 20 == 0 else "MANUAL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pad-namespaces", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port, args.pad_namespaces))


if __name__ == "__main__":
    main()
