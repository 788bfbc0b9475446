"""`check` refuses every value the server could not use, naming the key and the file; and a
configuration that passes `check` starts. (Same style as test_config_cli.py.)"""

from __future__ import annotations

import pytest

from test_config_cli import describe, run, write_config

MODBUS_DEVICE = """
[[devices]]
name = "press"
station = "Partners"
protocol = "modbus"
address = "{address}"
[[devices.tags]]
name = "Cycles"
register = "holding:4"
type = "uint32"
"""


@pytest.mark.parametrize(
    "case, text, key",
    [
        ("opcua host not an address", '[opcua]\nhost = "1.0.0.721"\n', "opcua.host"),
        ("opcua host with a path", '[opcua]\nhost = "127.0.0.1/x"\n', "opcua.host"),
        ("opcua host with a NUL", '[opcua]\nhost = "127.0.0.1\\u0000"\n', "opcua.host"),
        ("opcua host with a bidi control", '[opcua]\nhost = "local\\u202ehost"\n', "opcua.host"),
        ("opcua host that does not resolve", '[opcua]\nhost = "no-such-host.invalid"\n', "opcua.host"),
        ("opcua host of another machine", '[opcua]\nhost = "192.0.2.1"\n', "opcua.host"),
        ("opcua port 0", "[opcua]\nport = 0\n", "opcua.port"),
        ("http host of another machine", '[http]\nhost = "192.0.2.1"\n', "http.host"),
        ("no http connections", "[http]\nmax_connections = 0\n", "http.max_connections"),
        ("per-client over global", "[http]\nmax_connections = 10\nmax_connections_per_client = 11\n",
         "http.max_connections_per_client"),
        ("header timeout too short", "[http]\nheader_read_timeout_ms = 1\n", "http.header_read_timeout_ms"),
        ("body timeout too long", "[http]\nbody_read_timeout_ms = 100000000\n", "http.body_read_timeout_ms"),
        ("fsync interval too long", "[streams]\nspool_fsync_ms = 3600000\n", "streams.spool_fsync_ms"),
        ("mqtt broker not an address", '[mqtt]\nbroker = "1.0.0.721:1883"\n', "mqtt.broker"),
        ("influxdb host not an address", '[influxdb]\nurl = "http://1.0.0.721:8086"\n', "influxdb.url"),
        ("modbus host with a path", MODBUS_DEVICE.format(address="127.0.0.1/x:502"), "devices[0]"),
        ("invisible town", '[stop]\ntown = "\\ufeff"\n', "stop.town"),
        ("bidi venue", '[stop]\nvenue = "\\u202e"\n', "stop.venue"),
        ("invisible site name", '[site]\nname = "\\u200b "\n', "site.name"),
        ("empty data dir", '[storage]\ndata_dir = ""\n', "storage.data_dir"),
    ],
)
def test_check_refuses_a_value_the_server_cannot_use(gateway_bin, tmp_path, case, text, key):
    path = write_config(tmp_path, text, name="bad.toml")
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 2, f"{case} accepted:\n{describe(proc)}"
    assert key in proc.stderr, f"{case}: stderr does not name `{key}`\n{describe(proc)}"
    assert str(path) in proc.stderr, f"{case}: stderr does not name the file\n{describe(proc)}"
    assert "panicked" not in proc.stderr, describe(proc)


def test_a_configuration_that_passes_check_starts(gateway_bin, gateway_factory, tmp_path):
    text = """
[opcua]
host = "localhost"

[http]
max_connections = 64
max_connections_per_client = 8
header_read_timeout_ms = 5000
body_read_timeout_ms = 5000

[streams]
spool_fsync_ms = 0

[stop]
town = "Lens"
venue = "Lycée Condorcet"
"""
    path = write_config(tmp_path, text, name="good.toml")
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    # The test harness puts the listeners on free loopback ports (environment over file).
    gw = gateway_factory(name="checked", args=["--config", str(path)])
    assert gw.proc.poll() is None
