"""The InfluxDB sink over https: VictoriaMetrics serving TLS (`-tls -tlsCertFile -tlsKeyFile`)
with a certificate from a test CA that names a host, not the address the gateway connects to.

The gateway trusts the CA (`influxdb.ca_file`) and checks the certificate against
`influxdb.server_name`: the points arrive. Without `server_name` the certificate does not
match `127.0.0.1`, and the sink refuses to write (counted, with the TLS error).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import start_gateway, stop_gateway
from peer_influx import VictoriaMetrics, tools_missing
from sink_counters import sink_counters, wait_until

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=tools_missing() or "")

HOST = "victoria.fleet.test"


def make_certificates(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signs for DNS:victoria.fleet.test (webpki refuses a CA
    as the server's own)."""
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    key, csr, cert = workdir / "vm.key", workdir / "vm.csr", workdir / "vm.crt"
    san = workdir / "san.ext"
    san.write_text(f"subjectAltName=DNS:{HOST}\n", encoding="utf-8")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(ca_key),
         "-out", str(ca), "-subj", "/CN=fabrique-test-ca"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", f"/CN={HOST}"],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(san)],
    ):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    return ca, cert, key


class TlsVictoriaMetrics(VictoriaMetrics):
    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.ca, self.cert, self.key = make_certificates(workdir)
        self.context = ssl.create_default_context(cafile=str(self.ca))
        self.context.check_hostname = False  # the test reaches it by address

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*super().command(), "-tls", f"-tlsCertFile={self.cert}", f"-tlsKeyFile={self.key}"]

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5, context=self.context) as r:
            return r.status, r.read()

    def ready(self) -> bool:
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False

    def export(self, selector: str) -> list[dict]:
        self.get("/internal/force_flush")
        _, body = self.get(f"/api/v1/export?{urllib.parse.urlencode({'match[]': selector})}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def victoria(tmp_path_factory):
    vm = TlsVictoriaMetrics(tmp_path_factory.mktemp("victoria-tls"))
    vm.start()
    yield vm
    vm.stop()


def config(workdir: Path, victoria: TlsVictoriaMetrics, server_name: bool) -> list[str]:
    path = workdir / "influx-tls.toml"
    name = f'server_name = "{HOST}"\n' if server_name else ""
    path.write_text(
        f"""[influxdb]
enabled = true
url = "{victoria.url}"
api = "v2"
token_env = ""
ca_file = "{victoria.ca}"
{name}batch_size = 500
flush_ms = 200
disk_buffer_mb = 0
""",
        encoding="utf-8",
    )
    return ["--config", str(path)]


SYNTHETIC = {
    "FABRIQUE__SIMULATION__SYNTHETIC__TAGS": "3",
    "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ": "5",
}


def test_points_arrive_over_https_with_the_ca_and_server_name(gateway_bin, victoria, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path, SYNTHETIC, "influx-tls",
                       args=config(tmp_path, victoria, server_name=True))
    try:
        series = wait_until(
            lambda: victoria.export('{__name__="fabrique_value",device="Load",tag="T000000"}'),
            30,
            "Synthetic/Load/T000000 in VictoriaMetrics over https",
        )
        assert series[0]["metric"]["site"] == "fabrique-hdf"
        counters = wait_until(lambda: (c := sink_counters(gw, "InfluxDB"))["Sent"] > 0 and c, 20,
                              "Sent > 0")
        assert counters["Connected"] is True, counters
    finally:
        stop_gateway(gw)


def test_a_certificate_for_another_name_is_refused(gateway_bin, victoria, tmp_path):
    gw = start_gateway(gateway_bin, tmp_path, SYNTHETIC, "influx-tls-wrong-name",
                       args=config(tmp_path, victoria, server_name=False))
    try:
        counters = wait_until(
            lambda: (c := sink_counters(gw, "InfluxDB"))["Retries"] > 0 and c["LastError"] and c,
            30,
            "a failed write",
        )
        assert counters["Sent"] == 0 and counters["Connected"] is False, counters
        assert "certificate" in counters["LastError"].lower(), counters["LastError"]
    finally:
        stop_gateway(gw)
