"""The OPC UA client adapter against a partner that offers only secure endpoints.

The partner is tests/integration/peer_opcua.py --secure: Basic256Sha256 and Aes256Sha256RsaPss,
Sign and SignAndEncrypt, no None endpoint, no anonymous login: a user name and password, or a
user certificate. One gateway mirrors it twice:

- `cell-user`: Basic256Sha256 SignAndEncrypt, user name identity;
- `cell-cert`: Aes256_Sha256_RsaPss Sign, X.509 certificate identity;
- `cell-wrong`: the right channel, a wrong password.

The partner's certificate is not trusted at first: the devices stay disconnected with a
LastError that says so and how to trust it, their tags Bad. `fabrique-gateway pki list` shows
it as a rejected partner server; `pki trust` moves it, and the devices connect on their next
retry, without a restart: values mirrored, a write forwarded.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from asyncua import Client, ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, clean_env, connect, free_port, status_name, wait_for

sys.path.insert(0, str(Path(__file__).parent))
from peer_opcua import make_certificate  # noqa: E402

PEER_SCRIPT = Path(__file__).with_name("peer_opcua.py")
PARTNER_NS = "urn:partner:cell"
USER, PASSWORD = "crew", "s3cret-partner"
PASSWORD_ENV = "FABRIQUE_TEST_PARTNER_PASSWORD"
WRONG_ENV = "FABRIQUE_TEST_PARTNER_WRONG_PASSWORD"

DEVICE_TAGS = """
  [[devices.tags]]
  name = "Temperature"
  node_id = "nsu=urn:partner:cell;s=Temperature"
  type = "float64"

  [[devices.tags]]
  name = "Setpoint"
  node_id = "nsu=urn:partner:cell;s=Setpoint"
  type = "float64"
  access = "readwrite"
"""


def device(name: str, url: str, keys: str) -> str:
    return (
        f'[[devices]]\nname = "{name}"\nstation = "Partners"\nprotocol = "opcua"\n'
        f'endpoint = "{url}"\ntimeout_ms = 5000\n{keys}\n{DEVICE_TAGS}'
    )


def path(name: str) -> str:
    return f"Fabrique/Stations/Partners/{name}"


@pytest.fixture(scope="module")
def setup(gateway_bin, tmp_path_factory):
    directory = tmp_path_factory.mktemp("opcua-client-security")
    user_cert = directory / "user"
    make_certificate(user_cert, "urn:fabrique-gateway:test-user", "Gateway user")
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/"
    log = directory / "partner.log"
    with open(log, "wb") as out:
        partner = subprocess.Popen(
            [
                sys.executable, str(PEER_SCRIPT), "--port", str(port),
                "--secure", str(directory / "partner-pki"),
                "--user", f"{USER}:{PASSWORD}", "--user-cert", str(user_cert / "cert.der"),
            ],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "ready" not in log.read_text(errors="replace"):
            assert partner.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"partner not ready:\n{log.read_text()}"
            time.sleep(0.1)
        pki_dir = directory / "pki"
        config = directory / "gateway.toml"
        config.write_text(
            f'[opcua]\npki_dir = "{pki_dir}"\n\n'
            + device(
                "cell-user", url,
                f'security = "SignAndEncrypt"\nsecurity_policy = "Basic256Sha256"\n'
                f'username = "{USER}"\npassword_env = "{PASSWORD_ENV}"',
            )
            + device(
                "cell-cert", url,
                f'security = "Sign"\nsecurity_policy = "Aes256_Sha256_RsaPss"\n'
                f'identity_certificate = "{user_cert / "cert.der"}"\n'
                f'identity_private_key = "{user_cert / "key.pem"}"',
            )
            + device(
                "cell-wrong", url,
                f'security = "SignAndEncrypt"\nusername = "{USER}"\npassword_env = "{WRONG_ENV}"',
            ),
            encoding="utf-8",
        )
        env = {**FAST_SIMULATION_ENV, PASSWORD_ENV: PASSWORD, WRONG_ENV: "not-the-password"}
        gw = start_gateway(gateway_bin, directory, env, "opcua-client-security", args=["--config", str(config)])
        try:
            yield gw, config, pki_dir, partner, url
        finally:
            stop_gateway(gw)
    finally:
        partner.kill()
        partner.wait(timeout=10)


def pki(gateway_bin, config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(gateway_bin), "--config", str(config), "pki", *args],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )


async def last_error(opc, name: str) -> str:
    return await opc.read(f"{path(name)}/Status/LastError") or ""


async def test_untrusted_then_trusted_partner_with_user_and_certificate_identities(gateway_bin, setup):
    gw, config, pki_dir, _, url = setup
    async with connect(gw) as opc:
        # 1. The partner's certificate is unknown: no session, a clear reason, Bad tags.
        for name in ["cell-user", "cell-cert"]:
            async def untrusted(n=name):
                text = await last_error(opc, n)
                return text if "pki trust" in text else None

            reason = await wait_for(untrusted, 60, what=f"{name}: untrusted-certificate error")
            assert "not trusted" in reason, reason
            assert await opc.read(f"{path(name)}/Status/Connected") is False
            dv = (await opc.read_many([f"{path(name)}/Temperature"]))[0]
            assert not dv.StatusCode.is_good(), status_name(dv.StatusCode)

        # 2. `pki list` names it as a rejected partner server; `pki trust` trusts it.
        listed = pki(gateway_bin, config, "list")
        assert listed.returncode == 0, listed.stderr
        rejected = [line for line in listed.stdout.splitlines() if line.startswith("rejected") and "(partner server)" in line]
        assert len(rejected) == 1, listed.stdout
        thumbprint = rejected[0].split()[1]
        trusted = pki(gateway_bin, config, "trust", thumbprint)
        assert trusted.returncode == 0, trusted.stderr
        assert "(partner server)" in trusted.stdout
        assert any((pki_dir / "partners" / "trusted").iterdir())

        # 3. Next retry: both identities connect; values mirrored and changing.
        for name in ["cell-user", "cell-cert"]:
            async def good(n=name):
                dv = (await opc.read_many([f"{path(n)}/Temperature"]))[0]
                return dv if dv.StatusCode.is_good() else None

            first = await wait_for(good, 90, what=f"{name}: Temperature Good after pki trust")
            assert await opc.read(f"{path(name)}/Status/Connected") is True

            async def changed(n=name, v=first.Value.Value):
                dv = (await opc.read_many([f"{path(n)}/Temperature"]))[0]
                return dv.StatusCode.is_good() and dv.Value.Value != v

            await wait_for(changed, 10, what=f"{name}: Temperature changing")

        # 4. A write goes through the encrypted session to the partner.
        code = await opc.write_status(f"{path('cell-user')}/Setpoint", ua.Variant(42.5, ua.VariantType.Double))
        assert code.is_good(), status_name(code)
        code = await opc.write_status(f"{path('cell-cert')}/Setpoint", ua.Variant(17.25, ua.VariantType.Double))
        assert code.is_good(), status_name(code)

        # 5. A wrong password: the channel is fine, the login is refused, with the reason.
        async def refused():
            text = await last_error(opc, "cell-wrong")
            return text if text and "pki trust" not in text else None

        reason = await wait_for(refused, 60, what="cell-wrong: login refused")
        assert "Bad" in reason, reason
        assert await opc.read(f"{path('cell-wrong')}/Status/Connected") is False

    # The partner itself has the written value (read over its own secure endpoint).
    partner_dir = pki_dir.parent / "partner-pki"
    client = Client(url, timeout=10)
    await client.set_security_string(
        f"Basic256Sha256,SignAndEncrypt,{pki_dir.parent / 'user' / 'cert.der'},{pki_dir.parent / 'user' / 'key.pem'},{partner_dir / 'cert.der'}"
    )
    client.application_uri = "urn:fabrique-gateway:test-user"
    client.set_user(USER)
    client.set_password(PASSWORD)
    await client.connect()
    try:
        ns = await client.get_namespace_index(PARTNER_NS)
        assert await client.get_node(ua.NodeId("Setpoint", ns)).read_value() == 17.25
    finally:
        await client.disconnect()


def test_check_names_the_security_key(gateway_bin, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(
        device("cell", "opc.tcp://127.0.0.1:4841/", 'security = "None"\nsecurity_policy = "Basic256Sha256"'),
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(gateway_bin), "--config", str(config), "check"],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert result.returncode == 2, result.stdout
    assert "devices[0].security_policy" in result.stderr, result.stderr
