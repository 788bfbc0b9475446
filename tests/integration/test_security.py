"""OPC UA security: every policy and mode, every identity type, roles, and the PKI commands.

Real TLS: the asyncua client signs and encrypts with its own self-signed certificate, which the
gateway must trust (pki/trusted) or reject (pki/rejected).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fabrique_testlib import INSTANCES_URI, TYPES_URI, Opc, clean_env, status_name

SPEED_SETPOINT = "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint"
DEMO_HASHES = {
    # From `echo -n <name> | fabrique-gateway hash-password` (the demo users' own passwords).
    "viewer": "$argon2id$v=19$m=19456,t=2,p=1$lqZVp6xATOyXv+51tw09Kw$93PtS/hzR/yZz+QPKkZiQc2svkCsBc96rhjfHuENcVc",
    "operator": "$argon2id$v=19$m=19456,t=2,p=1$gUpiut9Z4tMNfwbRXaJ8lg$EpZe0Jezq0H1noW8FvIHTHK0WbMkpLfKOQVsu/b+JVU",
}
POLICIES = ["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]
ASYNCUA_POLICY = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


def make_cert(directory: Path, name: str, uri: str) -> tuple[Path, Path]:
    """A self-signed RSA 2048 certificate (DER) and key (PEM) for application `uri`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    der = directory / f"{name}.der"
    pem = directory / f"{name}.pem"
    der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return der, pem


class App:
    """A client application identity: certificate, key, application URI."""

    def __init__(self, directory: Path, name: str):
        self.uri = f"urn:fabrique:test:{name}"
        self.cert, self.key = make_cert(directory, name, self.uri)


@contextlib.asynccontextmanager
async def session(
    gw, app: App | None, policy: str = "None", mode: str = "None", *,
    user: str | None = None, password: str | None = None, user_cert: App | None = None,
):
    client = Client(gw.url, timeout=10)
    if app is not None:
        client.application_uri = app.uri
        await client.set_security(
            ASYNCUA_POLICY[policy], str(app.cert), str(app.key),
            mode=getattr(ua.MessageSecurityMode, mode),
        )
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    if user_cert is not None:
        await client.load_client_certificate(str(user_cert.cert))
        await client.load_private_key(Path(user_cert.key))
    await client.connect()
    try:
        inst = await client.get_namespace_index(INSTANCES_URI)
        types = await client.get_namespace_index(TYPES_URI)
        yield Opc(client=client, inst=inst, types=types, gateway=gw)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


def write_config(path: Path, pki_dir: Path, extra: str = "") -> Path:
    endpoints = '[[opcua.endpoints]]\npolicy = "None"\nmode = "None"\n'
    for policy in POLICIES:
        for mode in ("Sign", "SignAndEncrypt"):
            endpoints += f'[[opcua.endpoints]]\npolicy = "{policy}"\nmode = "{mode}"\n'
    path.write_text(f'[opcua]\npki_dir = "{pki_dir}"\n{extra}\n{endpoints}')
    return path


def cli(gateway_bin, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(gateway_bin), "--config", str(config), *args],
        env=clean_env(), capture_output=True, text=True, timeout=60,
    )


def trust(pki_dir: Path, app: App) -> None:
    """Pre-trust a client, named the way async-opcua looks it up: `CN=<cn> [<sha1>].der`."""
    (pki_dir / "trusted").mkdir(parents=True, exist_ok=True)
    der = app.cert.read_bytes()
    name = f"CN={app.cert.stem} [{hashlib.sha1(der).hexdigest()}].der"
    shutil.copy(app.cert, pki_dir / "trusted" / name)


async def write_speed(opc: Opc, value: float) -> ua.StatusCode:
    return await opc.write_status(SPEED_SETPOINT, ua.Variant(value, ua.VariantType.Double))


@pytest.fixture
def secured(gateway_bin, gateway_factory, tmp_path):
    """A demo-profile gateway with every policy and mode, a trusted client application, the
    demo viewer and operator, and an X.509 user."""
    pki_dir = tmp_path / "pki"
    app = App(tmp_path, "client-app")
    person = App(tmp_path, "badge-alice")
    trust(pki_dir, app)
    users = "".join(
        f'[[opcua.users]]\nname = "{name}"\npassword_hash = "{h}"\nrole = "{name}"\n'
        for name, h in DEMO_HASHES.items()
    )
    users += f'[[opcua.users]]\nname = "alice"\ncertificate = "{person.cert}"\nrole = "operator"\n'
    config = write_config(tmp_path / "secured.toml", pki_dir, 'profile = "demo"\nanonymous = true\n' + users)
    gw = gateway_factory(name="secured", args=["--config", str(config)])
    return gw, app, person, config, pki_dir


async def test_every_policy_and_mode_with_a_password(secured):
    gw, app, _, _, _ = secured
    for policy in POLICIES:
        for mode in ("Sign", "SignAndEncrypt"):
            async with session(gw, app, policy, mode, user="operator", password="operator") as opc:
                assert isinstance(await opc.read(SPEED_SETPOINT), float), (policy, mode)
                code = await write_speed(opc, 12.0)
                assert code.is_good(), (policy, mode, status_name(code))
    async with session(gw, None, user="operator", password="operator") as opc:
        assert isinstance(await opc.read(SPEED_SETPOINT), float)


async def test_each_identity_type_and_its_role(secured, tmp_path):
    gw, app, person, _, _ = secured
    policy, mode = "Basic256Sha256", "SignAndEncrypt"
    stranger_badge = App(tmp_path, "badge-mallory")
    with pytest.raises(ua.UaError):
        async with session(gw, app, policy, mode, user_cert=stranger_badge):
            pass
    async with session(gw, app, policy, mode, user_cert=person) as opc:
        assert (await write_speed(opc, 7.0)).is_good()
        assert await opc.read(SPEED_SETPOINT) == 7.0
    async with session(gw, app, policy, mode) as anonymous:
        assert await anonymous.read(SPEED_SETPOINT) == 7.0
        code = await write_speed(anonymous, 9.0)
        assert status_name(code) == "BadUserAccessDenied"
        assert await anonymous.read(SPEED_SETPOINT) == 7.0


async def test_wrong_password_and_unknown_user_are_refused(secured):
    gw, app, _, _, _ = secured
    wrong = "Zebra-42-not-the-password"
    for user, password in [("operator", wrong), ("nobody", "operator")]:
        with pytest.raises(ua.UaError):
            async with session(gw, app, "Basic256Sha256", "SignAndEncrypt", user=user, password=password):
                pass
    with pytest.raises(ua.UaError):
        async with session(gw, None, user="operator", password=wrong):
            pass
    log = re.sub(r"\x1b\[[0-9;]*m", "", gw.log_tail(1000))  # the log is coloured
    refused = [line for line in log.splitlines() if "OPC UA login refused" in line]
    # Logged with the client's address, rate-limited per address (the unit tests count).
    assert refused and "client_address_by_order=127.0.0.1:" in refused[0], refused
    assert wrong not in log


async def test_viewer_is_denied_writes_and_calls_and_operator_is_not(secured):
    gw, app, _, _, _ = secured
    async with session(gw, app, "Basic256Sha256", "SignAndEncrypt", user="operator", password="operator") as op:
        assert (await write_speed(op, 5.0)).is_good()
        result = await op.submit_order("Classic", "Operator")
        assert result.StatusCode.is_good(), status_name(result.StatusCode)
        orders_after_operator = result.OutputArguments[0]
    async with session(gw, app, "Basic256Sha256", "SignAndEncrypt", user="viewer", password="viewer") as viewer:
        assert status_name(await write_speed(viewer, 6.0)) == "BadUserAccessDenied"
        assert await viewer.read(SPEED_SETPOINT) == 5.0
        result = await viewer.submit_order("Classic", "Viewer")
        assert status_name(result.StatusCode) == "BadUserAccessDenied"
        for method in ("Start", "Stop"):
            result = await viewer.call("Fabrique/Line", method)
            assert status_name(result.StatusCode) == "BadUserAccessDenied", method
        user_access = await viewer.node(SPEED_SETPOINT).read_attribute(ua.AttributeIds.UserAccessLevel)
        assert not (user_access.Value.Value & ua.AccessLevel.CurrentWrite.mask)
    async with session(gw, app, "Basic256Sha256", "SignAndEncrypt", user="operator", password="operator") as op:
        result = await op.submit_order("Classic", "Again")
        assert result.StatusCode.is_good()
        assert result.OutputArguments[0] != orders_after_operator


async def test_untrusted_certificate_is_rejected_until_pki_trust(secured, gateway_bin, tmp_path):
    gw, _, _, config, _ = secured
    stranger = App(tmp_path, "stranger")
    with pytest.raises(Exception):
        async with session(gw, stranger, "Basic256Sha256", "SignAndEncrypt", user="operator", password="operator"):
            pass
    listing = cli(gateway_bin, config, "pki", "list")
    assert listing.returncode == 0, listing.stderr
    lines = [line.split(None, 2) for line in listing.stdout.splitlines()]
    rejected = [line for line in lines if line[0] == "rejected" and "stranger" in line[2]]
    assert len(rejected) == 1, listing.stdout
    thumbprint = rejected[0][1]
    assert len(thumbprint) == 40
    assert any(line[0] == "trusted" and "client-app" in line[2] for line in lines), listing.stdout

    unknown = cli(gateway_bin, config, "pki", "trust", "00" * 20)
    assert unknown.returncode != 0 and "no certificate with thumbprint" in unknown.stderr

    trusted = cli(gateway_bin, config, "pki", "trust", thumbprint)
    assert trusted.returncode == 0, trusted.stderr
    # No restart: the same gateway process accepts it now.
    async with session(gw, stranger, "Basic256Sha256", "SignAndEncrypt", user="operator", password="operator") as opc:
        assert isinstance(await opc.read(SPEED_SETPOINT), float)
    rejected_again = cli(gateway_bin, config, "pki", "reject", thumbprint)
    assert rejected_again.returncode == 0, rejected_again.stderr
    with pytest.raises(Exception):
        async with session(gw, stranger, "Basic256Sha256", "SignAndEncrypt", user="operator", password="operator"):
            pass


async def test_anonymous_refused_when_off(gateway_factory):
    gw = gateway_factory(env={"FABRIQUE__OPCUA__ANONYMOUS": "false"}, name="no-anonymous")
    with pytest.raises(ua.UaError):
        async with session(gw, None):
            pass
    async with session(gw, None, user="viewer", password="viewer") as opc:
        assert isinstance(await opc.read(SPEED_SETPOINT), float)


async def test_demo_default_allows_read_only_anonymous(gateway):
    async with session(gateway, None) as anonymous:
        before = await anonymous.read(SPEED_SETPOINT)
        assert status_name(await write_speed(anonymous, before + 1.0)) == "BadUserAccessDenied"
        result = await anonymous.submit_order("Classic", "Anon")
        assert status_name(result.StatusCode) == "BadUserAccessDenied"
        assert await anonymous.read(SPEED_SETPOINT) == before


def test_secure_profile_refuses_demo_shortcuts(gateway_bin, tmp_path):
    config = tmp_path / "secure.toml"
    config.write_text('[opcua]\nprofile = "secure"\nanonymous = true\n')
    result = cli(gateway_bin, config, "check")
    assert result.returncode == 2 and "opcua.anonymous" in result.stderr, result.stderr
    config.write_text('[opcua]\nprofile = "secure"\n[[opcua.endpoints]]\npolicy = "None"\nmode = "None"\n')
    result = cli(gateway_bin, config, "check")
    assert result.returncode == 2 and "opcua.endpoints[0].policy" in result.stderr, result.stderr
    config.write_text('[opcua]\n[[opcua.endpoints]]\npolicy = "Basic256Sha256"\nmode = "None"\n')
    result = cli(gateway_bin, config, "check")
    assert result.returncode == 2 and "opcua.endpoints[0].policy" in result.stderr, result.stderr


async def test_secure_profile_with_a_hashed_password(gateway_bin, gateway_factory, tmp_path):
    hashed = subprocess.run(
        [str(gateway_bin), "hash-password"], input="Tr0ub4dor", capture_output=True, text=True,
        env=clean_env(), timeout=60,
    )
    assert hashed.returncode == 0, hashed.stderr
    phc = hashed.stdout.strip()
    assert phc.startswith("$argon2id$")
    pki_dir = tmp_path / "pki"
    app = App(tmp_path, "scada")
    trust(pki_dir, app)
    config = tmp_path / "secure.toml"
    config.write_text(
        f'[opcua]\nprofile = "secure"\npki_dir = "{pki_dir}"\n'
        f'[[opcua.users]]\nname = "scada"\npassword_hash = "{phc}"\nrole = "operator"\n'
    )
    gw = gateway_factory(name="secure", args=["--config", str(config)])
    async with session(gw, app, "Aes256_Sha256_RsaPss", "SignAndEncrypt", user="scada", password="Tr0ub4dor") as opc:
        assert (await write_speed(opc, 3.0)).is_good()
    for user, password in [("operator", "operator"), (None, None)]:
        with pytest.raises(Exception):
            async with session(gw, app, "Basic256Sha256", "SignAndEncrypt", user=user, password=password):
                pass
    with pytest.raises(Exception):  # no None endpoint in the secure profile
        async with session(gw, None, user="scada", password="Tr0ub4dor"):
            pass
