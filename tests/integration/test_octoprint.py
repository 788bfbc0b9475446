"""The OctoPrint adapter against the real OctoPrint 1.11 and its virtual printer.

Everything is asserted through the gateway's OPC UA server. The module's OctoPrint tests skip
(loudly) only when OctoPrint cannot be installed; the configuration tests always run.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from asyncua import ua

from conftest import start_gateway, stop_gateway
from fabrique_testlib import FAST_SIMULATION_ENV, REPO_ROOT, clean_env, connect, is_set_datetime, wait_for
from peer_octoprint import OctoPrintServer, OctoPrintUnavailable, ensure_installed

API_KEY = "fabrique-test-0123456789ABCDEF"
KEY_VAR = "FABRIQUE_TEST_OCTOPRINT_KEY"
STATION = "Printing"
DEVICE = "Printer3D"
BASE = f"Fabrique/Stations/{STATION}/{DEVICE}"
STATUS = f"{BASE}/Status"
TEMPERATURES = ["NozzleTemperature", "NozzleTarget", "BedTemperature", "BedTarget"]


def device_block(url: str, *, key_var: str = KEY_VAR, extra: str = "") -> str:
    return f"""\
[[devices]]
name = "{DEVICE}"
station = "{STATION}"
protocol = "octoprint"
url = "{url}"
api_key_env = "{key_var}"
poll_ms = 250
timeout_ms = 1000
setpoints = true
max_nozzle_target = 250.0
max_bed_target = 90.0
identification = {{ manufacturer = "OctoPrint", model = "Virtual printer", serial = "VP-1" }}
{extra}"""


@pytest.fixture(scope="module")
def octoprint(tmp_path_factory):
    try:
        executable = ensure_installed()
    except OctoPrintUnavailable as e:
        pytest.skip(f"!!! OctoPrint COULD NOT BE INSTALLED, its tests did not run !!!\n{e}")
    server = OctoPrintServer(executable, tmp_path_factory.mktemp("octoprint"), API_KEY)
    try:
        server.start()
    except RuntimeError as e:
        server.stop()
        pytest.fail(f"OctoPrint did not start: {e}", pytrace=False)
    yield server
    server.stop()


def start_octoprint_gateway(gateway_bin, tmp_path, url: str, key: str, name: str):
    config = tmp_path / f"{name}.toml"
    config.write_text(device_block(url), encoding="utf-8")
    return start_gateway(
        gateway_bin, tmp_path, {**FAST_SIMULATION_ENV, KEY_VAR: key}, name, args=["--config", str(config)]
    )


@pytest.fixture(scope="module")
def octo_gateway(gateway_bin, octoprint, tmp_path_factory):
    gw = start_octoprint_gateway(
        gateway_bin, tmp_path_factory.mktemp("octo-gateway"), octoprint.url, API_KEY, "octoprint"
    )
    yield gw
    stop_gateway(gw)


@pytest.fixture
async def opc(octo_gateway):
    async with connect(octo_gateway) as o:
        yield o


async def read_dv(opc, tag: str) -> ua.DataValue:
    return await opc.node(f"{BASE}/{tag}").read_data_value(raise_on_bad_status=False)


async def good_value(opc, tag: str):
    """The tag's value if it is Good, else None (for wait_for)."""
    dv = await read_dv(opc, tag)
    return dv.Value.Value if dv.StatusCode.is_good() else None


async def wait_connected(opc, timeout: float = 20):
    await wait_for(lambda: opc.read(f"{STATUS}/Connected"), timeout, what="Status/Connected true")
    for tag in ["State", *TEMPERATURES]:
        await wait_for(lambda t=tag: _is_good(opc, t), timeout, what=f"{tag} Good")


async def _is_good(opc, tag: str) -> bool:
    return (await read_dv(opc, tag)).StatusCode.is_good()


def octoprint_target(octoprint, heater: str) -> float:
    status, body = octoprint.request("GET", "/api/printer")
    assert status == 200, body
    return body["temperature"][heater]["target"]


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------


async def test_state_and_temperatures_read_good_and_plausible(opc):
    await wait_connected(opc)
    state = await read_dv(opc, "State")
    assert state.Value.Value == "Operational"
    assert state.Value.VariantType == ua.VariantType.String
    assert await opc.read(f"{BASE}/Operational") is True
    assert await opc.read(f"{BASE}/Printing") is False
    for tag in ["NozzleTemperature", "BedTemperature"]:
        dv = await read_dv(opc, tag)
        assert dv.StatusCode.is_good(), f"{tag}: {dv.StatusCode}"
        assert dv.Value.VariantType == ua.VariantType.Double
        assert 10.0 <= dv.Value.Value <= 300.0, f"{tag} = {dv.Value.Value}"
    job = await read_dv(opc, "JobProgress")
    assert job.StatusCode.is_good() and job.Value.VariantType == ua.VariantType.Double
    assert (await read_dv(opc, "PrintTimeLeft")).Value.VariantType == ua.VariantType.UInt32
    assert await opc.read(f"{STATUS}/LastError") == ""
    assert is_set_datetime(await opc.read(f"{STATUS}/LastReadTime"))
    ok = await opc.read(f"{STATUS}/RequestsOk")
    await wait_for(lambda: _more(opc, f"{STATUS}/RequestsOk", ok), 10, what="RequestsOk to grow")
    assert await opc.read(f"{BASE}/Protocol") == "octoprint"
    assert await opc.read(f"{BASE}/SerialNumber") == "VP-1"


async def _more(opc, path: str, than) -> bool:
    return (await opc.read(path)) > than


async def test_targets_set_in_octoprint_show_through_the_gateway(opc, octoprint):
    await wait_connected(opc)
    assert octoprint.request("POST", "/api/printer/tool", {"command": "target", "targets": {"tool0": 185}})[0] == 204
    assert octoprint.request("POST", "/api/printer/bed", {"command": "target", "target": 55})[0] == 204
    await wait_for(lambda: _equals(opc, "NozzleTarget", 185.0), 15, what="NozzleTarget 185")
    await wait_for(lambda: _equals(opc, "BedTarget", 55.0), 15, what="BedTarget 55")
    # The setpoints read back the printer's target, and the virtual printer heats up.
    assert await good_value(opc, "NozzleTargetSetpoint") == 185.0
    cold = await good_value(opc, "NozzleTemperature")
    await wait_for(lambda: _warmer(opc, cold), 15, what="NozzleTemperature to rise")
    for path, body in [
        ("/api/printer/tool", {"command": "target", "targets": {"tool0": 0}}),
        ("/api/printer/bed", {"command": "target", "target": 0}),
    ]:
        octoprint.request("POST", path, body)


async def _equals(opc, tag: str, value) -> bool:
    return await good_value(opc, tag) == value


async def _warmer(opc, than: float) -> bool:
    now = await good_value(opc, "NozzleTemperature")
    return now is not None and now > than + 1.0


# ---------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------


async def test_setpoint_writes_reach_the_printer_and_refusals_keep_the_value(opc, octoprint):
    await wait_connected(opc)
    setpoint = f"{BASE}/BedTargetSetpoint"
    code = await opc.write_status(setpoint, ua.Variant(42.5, ua.VariantType.Double))
    assert code.is_good(), code
    # Published before the write was acknowledged: a read right after sees it.
    assert await opc.read(setpoint) == 42.5
    assert octoprint_target(octoprint, "bed") == 42.5
    await wait_for(lambda: _equals(opc, "BedTarget", 42.5), 10, what="BedTarget 42.5")

    too_hot = await opc.write_status(setpoint, ua.Variant(150.0, ua.VariantType.Double))
    assert too_hot.name == "BadOutOfRange", too_hot
    wrong_type = await opc.write_status(setpoint, ua.Variant("hot", ua.VariantType.String))
    assert wrong_type.name == "BadTypeMismatch", wrong_type
    read_only = await opc.write_status(f"{BASE}/BedTemperature", ua.Variant(60.0, ua.VariantType.Double))
    assert read_only.name in ("BadNotWritable", "BadUserAccessDenied"), read_only
    assert await opc.read(setpoint) == 42.5
    assert octoprint_target(octoprint, "bed") == 42.5

    code = await opc.write_status(f"{BASE}/NozzleTargetSetpoint", ua.Variant(0.0, ua.VariantType.Double))
    assert code.is_good(), code
    assert (await opc.write_status(setpoint, ua.Variant(0.0, ua.VariantType.Double))).is_good()
    assert octoprint_target(octoprint, "bed") == 0.0


# ---------------------------------------------------------------------------------------------
# Job progress
# ---------------------------------------------------------------------------------------------

TINY_GCODE = "G28\nG1 Z0.2 F600\n" + "".join(f"G1 X{i % 100} Y{(i * 7) % 100} F3000\n" for i in range(400))


async def test_a_print_job_shows_its_name_and_progress(opc, octoprint):
    await wait_connected(opc)
    assert octoprint.upload_and_print("keyring.gcode", TINY_GCODE) in (200, 201)
    try:
        await wait_for(lambda: _equals(opc, "Printing", True), 15, what="Printing true")
        # OctoPrint raises flags.printing while its state text still says "Starting".
        await wait_for(lambda: _equals(opc, "State", "Printing"), 15, what="State Printing")
        assert await opc.read(f"{BASE}/JobName") == "keyring.gcode"
        await wait_for(lambda: _progress_above(opc, 0.0), 20, what="JobProgress > 0")
        await wait_for(lambda: _more(opc, f"{BASE}/PrintTime", 0), 20, what="PrintTime > 0")
    finally:
        octoprint.request("POST", "/api/job", {"command": "cancel"})
    await wait_for(lambda: _equals(opc, "Printing", False), 20, what="Printing false after cancel")


async def _progress_above(opc, low: float) -> bool:
    value = await good_value(opc, "JobProgress")
    return value is not None and low < value <= 100.0


# ---------------------------------------------------------------------------------------------
# The printer unplugged from OctoPrint (HTTP 409)
# ---------------------------------------------------------------------------------------------


async def test_printer_disconnected_from_octoprint_reads_offline(opc, octoprint):
    await wait_connected(opc)
    reconnects = await opc.read(f"{STATUS}/Reconnects")
    assert octoprint.request("POST", "/api/connection", {"command": "disconnect"})[0] == 204
    try:
        await wait_for(lambda: _equals(opc, "State", "Offline"), 15, what="State Offline (Good)")
        assert await opc.read(f"{STATUS}/Connected") is False
        assert "not connected" in await opc.read(f"{STATUS}/LastError")
        for tag in ["NozzleTemperature", "Operational", "JobProgress"]:
            dv = await read_dv(opc, tag)
            assert dv.StatusCode.is_bad(), f"{tag} should be Bad, is {dv.StatusCode}"
            assert dv.Value.Value is not None, f"{tag} lost its last value"
        write = await opc.write_status(f"{BASE}/BedTargetSetpoint", ua.Variant(30.0, ua.VariantType.Double))
        assert write.name == "BadNoCommunication", write
    finally:
        octoprint.request("POST", "/api/connection", {"command": "connect"})
    await wait_connected(opc)
    assert await opc.read(f"{BASE}/State") == "Operational"
    assert await opc.read(f"{STATUS}/Reconnects") == reconnects + 1


# ---------------------------------------------------------------------------------------------
# A wrong API key
# ---------------------------------------------------------------------------------------------


async def test_a_wrong_api_key_is_reported_and_the_tags_stay_bad(gateway_bin, octoprint, tmp_path):
    gw = start_octoprint_gateway(gateway_bin, tmp_path, octoprint.url, "not-the-key", "octoprint-badkey")
    try:
        async with connect(gw) as opc:
            error = await wait_for(lambda: good_value(opc, "Status/LastError"), 20, what="LastError to be set")
            assert "authentication failed" in error, error
            assert KEY_VAR in error, f"LastError should name the key's source: {error}"
            assert "not-the-key" not in error
            assert await opc.read(f"{STATUS}/Connected") is False
            assert await opc.read(f"{STATUS}/RequestsOk") == 0
            for tag in ["State", "NozzleTemperature", "JobName"]:
                dv = await read_dv(opc, tag)
                assert dv.StatusCode.is_bad(), f"{tag}: {dv.StatusCode}"
    finally:
        stop_gateway(gw)
    log = gw.log_path.read_text(errors="replace")
    assert "not-the-key" not in log, "the API key leaked into the log"
    assert log.count("authentication failed") <= 2, "the refused key was logged more than once per kind"


# ---------------------------------------------------------------------------------------------
# OctoPrint stopped and restarted (last: it costs a restart of OctoPrint, ~7 s)
# ---------------------------------------------------------------------------------------------


async def test_octoprint_stopped_then_restarted(opc, octoprint):
    await wait_connected(opc)
    reconnects = await opc.read(f"{STATUS}/Reconnects")
    octoprint.stop()
    await wait_for(lambda: _not(opc.read(f"{STATUS}/Connected")), 20, what="Connected false")
    for tag in ["State", "NozzleTemperature"]:
        dv = await read_dv(opc, tag)
        assert dv.StatusCode.is_bad(), f"{tag}: {dv.StatusCode}"
    assert "cannot reach OctoPrint" in await opc.read(f"{STATUS}/LastError")
    failed_at = time.monotonic()
    startup = octoprint.start()
    await wait_connected(opc, timeout=40)
    assert await opc.read(f"{STATUS}/Reconnects") == reconnects + 1
    assert await opc.read(f"{STATUS}/LastError") == ""
    assert await opc.read(f"{BASE}/State") == "Operational"
    print(f"OctoPrint restart {startup:.1f} s, back through the gateway after {time.monotonic() - failed_at:.1f} s")


async def _not(awaitable) -> bool:
    return not await awaitable


# ---------------------------------------------------------------------------------------------
# Configuration errors (no OctoPrint needed)
# ---------------------------------------------------------------------------------------------


def check(gateway_bin, path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(gateway_bin), "check", "--config", str(path)],
        env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "case, block, key",
    [
        (
            "no key source",
            device_block("http://127.0.0.1:5000").replace(f'api_key_env = "{KEY_VAR}"\n', ""),
            "devices[0].api_key_env",
        ),
        ("not http", device_block("ftp://127.0.0.1:5000"), "devices[0].url"),
        ("key pasted", device_block("http://127.0.0.1:5000", key_var="9f8e-7d6c key"), "devices[0].api_key_env"),
        ("too fast", device_block("http://127.0.0.1:5000").replace("poll_ms = 250", "poll_ms = 5"), "devices[0].poll_ms"),
        ("unknown key", device_block("http://127.0.0.1:5000", extra='apikey = "x"\n'), "apikey"),
    ],
)
def test_config_errors_name_the_device_and_the_key(gateway_bin, tmp_path, case, block, key):
    path = tmp_path / "bad.toml"
    path.write_text(block, encoding="utf-8")
    proc = check(gateway_bin, path)
    assert proc.returncode != 0, f"{case} accepted:\n{proc.stdout}{proc.stderr}"
    assert key in proc.stderr, f"{case}: stderr does not name `{key}`:\n{proc.stderr}"
    if case != "unknown key":
        assert f"device `{DEVICE}`" in proc.stderr, f"{case}: stderr does not name the device:\n{proc.stderr}"
        assert str(path) in proc.stderr, f"{case}: stderr does not name the file:\n{proc.stderr}"


def test_the_example_configuration_is_valid(gateway_bin):
    proc = check(gateway_bin, REPO_ROOT / "config" / "examples" / "octoprint.toml")
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------
# A printer added by a reload, with its job methods
# ---------------------------------------------------------------------------------------------

PARTNER = "Fabrique/Stations/PartnerCell/Partner3D"
JOB_METHODS = {"PauseJob", "ResumeJob", "CancelJob"}


async def _partner_equals(opc, tag: str, value) -> bool:
    dv = await opc.node(f"{PARTNER}/{tag}").read_data_value(raise_on_bad_status=False)
    return dv.StatusCode.is_good() and dv.Value.Value == value


async def _methods_of(opc, path: str) -> set[str]:
    try:
        children = await opc.node(path).get_children()
    except ua.UaStatusCodeError:
        return set()
    names = set()
    for child in children:
        if await child.read_node_class() == ua.NodeClass.Method:
            names.add((await child.read_browse_name()).Name)
    return names


async def test_a_printer_added_by_a_reload_brings_its_job_methods(gateway_bin, octoprint, tmp_path):
    """A partner printer with `job_control = true` added by SIGHUP: its methods appear in the
    address space (browse), and calling them drives the real OctoPrint's job."""
    config = tmp_path / "partner.toml"
    config.write_text("", encoding="utf-8")
    gw = start_gateway(
        gateway_bin, tmp_path, {**FAST_SIMULATION_ENV, KEY_VAR: API_KEY}, "reload-methods",
        args=["--config", str(config)],
    )
    try:
        async with connect(gw) as opc:
            assert await _methods_of(opc, PARTNER) == set()
            config.write_text(f"""\
[[devices]]
name = "Partner3D"
station = "PartnerCell"
protocol = "octoprint"
url = "{octoprint.url}"
api_key_env = "{KEY_VAR}"
poll_ms = 250
timeout_ms = 1000
job_control = true
identification = {{ manufacturer = "OctoPrint", model = "Virtual printer", serial = "VP-2" }}
""", encoding="utf-8")
            gw.proc.send_signal(signal.SIGHUP)

            async def drawn() -> bool:
                return await _methods_of(opc, PARTNER) == JOB_METHODS

            await wait_for(drawn, 20, what="the job methods drawn after the reload")
            await wait_for(lambda: _partner_equals(opc, "Status/Connected", True), 20, what="Partner3D connected")
            # No job yet: OctoPrint refuses (409), the client is told why.
            result = await opc.call(PARTNER, "CancelJob")
            assert result.StatusCode.name == "BadInvalidState", result.StatusCode
            assert octoprint.upload_and_print("reload.gcode", TINY_GCODE) in (200, 201)
            try:
                await wait_for(lambda: _partner_equals(opc, "Printing", True), 15, what="Printing")
                result = await opc.call(PARTNER, "PauseJob")
                assert result.StatusCode.is_good(), result.StatusCode
                await wait_for(lambda: _partner_equals(opc, "State", "Paused"), 20, what="State Paused")
                result = await opc.call(PARTNER, "CancelJob")
                assert result.StatusCode.is_good(), result.StatusCode
                await wait_for(lambda: _partner_equals(opc, "Printing", False), 20, what="Printing false")
            finally:
                octoprint.request("POST", "/api/job", {"command": "cancel"})
    finally:
        stop_gateway(gw)
