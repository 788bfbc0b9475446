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

`--secure DIR` offers only secure endpoints (Basic256Sha256 and Aes256Sha256RsaPss, Sign and
SignAndEncrypt) with a certificate it makes in DIR (cert.der, key.pem; kept across restarts).
`--user NAME:PASSWORD` and `--user-cert FILE` then replace anonymous login by a user name or
an X.509 identity (either or both).
Prints "ready <port>" once it accepts clients.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ipaddress
import math
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto import uacrypto
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:partner:cell"
SETPOINT_RANGE = (0.0, 100.0)


SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]
APPLICATION_URI = "urn:partner:cell:server"


class PartnerUsers:
    """Logins the partner accepts: one user name and password, one user certificate."""

    def __init__(self, user: tuple[str, str] | None, cert_der: bytes | None):
        self.user = user
        self.cert_der = cert_der

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username is not None and self.user is not None and (username, password) == self.user:
            return User(role=UserRole.User, name=username)
        if certificate is not None and self.cert_der is not None and certificate == self.cert_der:
            return User(role=UserRole.User, name="certificate")
        return None


def make_certificate(directory: Path, uri: str, name: str) -> None:
    """A self-signed application certificate for 127.0.0.1: DIR/cert.der and DIR/key.pem."""
    directory.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        name,
        {"countryName": "FR", "organizationName": "Partner"},
        [
            x509.UniformResourceIdentifier(uri),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=365,
    )
    (directory / "key.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    (directory / "cert.der").write_bytes(cert.public_bytes(encoding=Encoding.DER))


async def secure(server: Server, directory: Path, user: str | None, user_cert: Path | None) -> None:
    key, cert = directory / "key.pem", directory / "cert.der"
    if not cert.is_file():
        make_certificate(directory, APPLICATION_URI, "Partner cell")
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    server.set_security_policy(SECURE_POLICIES)
    tokens = []
    login = tuple(user.split(":", 1)) if user else None
    cert_der = None
    if user_cert is not None:
        cert_der = uacrypto.der_from_x509(await uacrypto.load_certificate(user_cert))
        tokens.append(ua.X509IdentityToken)
    if login is not None:
        tokens.append(ua.UserNameIdentityToken)
    if tokens:
        server.set_identity_tokens(tokens)
        server.iserver.user_manager = PartnerUsers(login, cert_der)


async def serve(port: int, pad_namespaces: int, secure_dir: Path | None, user: str | None, user_cert: Path | None) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/")
    server.set_server_name("Partner cell")
    await server.set_application_uri(APPLICATION_URI)
    if secure_dir is not None:
        await secure(server, secure_dir, user, user_cert)
    else:
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
    parser.add_argument("--secure", type=Path, default=None, metavar="DIR")
    parser.add_argument("--user", default=None, metavar="NAME:PASSWORD")
    parser.add_argument("--user-cert", type=Path, default=None, metavar="FILE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port, args.pad_namespaces, args.secure, args.user, args.user_cert))


if __name__ == "__main__":
    main()
