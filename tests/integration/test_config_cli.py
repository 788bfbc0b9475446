"""`check` and `print-config`: configuration layering and error messages. No server runs."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from fabrique_testlib import DEFAULT_MODELS, clean_env

VALID_CONFIG = """\
[opcua]
host = "127.0.0.1"
port = 48555

[simulation]
seed = 7
speed = 10
orders_per_hour = 0
defect_rate = 0.05

[line]
models = ["Classic", "Wave"]
max_text_length = 24
recent_orders = 20
step_durations_s = [30.0, 20.0, 15.0, 240.0, 90.0, 45.0, 40.0, 30.0, 25.0]
"""


def run(gateway_bin, *args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(gateway_bin), *args],
        env=clean_env(**(env or {})),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def write_config(tmp_path, text: str, name: str = "gateway.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_check_accepts_a_valid_file(gateway_bin, tmp_path):
    path = write_config(tmp_path, VALID_CONFIG)
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)


def test_check_accepts_the_built_in_defaults(gateway_bin, tmp_path):
    proc = run(gateway_bin, "check", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)


@pytest.mark.parametrize(
    "case, text, must_mention",
    [
        ("unknown key", "[opcua]\nprot = 1\n", ["prot"]),
        ("wrong type", '[opcua]\nport = "abc"\n', ["port"]),
        ("bad value", "[simulation]\nspeed = -1\n", ["simulation.speed"]),
        # A misspelt key among a device's common keys (adapters/src/block.rs) or its
        # protocol's own: named, with every key the block accepts.
        (
            "misspelt common device key",
            '[[devices]]\nname = "plc"\nstation = "Cell"\nprotocol = "modbus"\naddress = "127.0.0.1:5020"\nsteeps = [3]\n',
            ["unknown field `steeps`", "`steps`", "`out_of_service`", "`address`", "`max_gap`"],
        ),
        (
            "misspelt own device key",
            '[[devices]]\nname = "p"\nstation = "Cell"\nprotocol = "octoprint"\nurl = "http://127.0.0.1:5000"\napi_key_env = "K"\njob_controls = true\n',
            ["unknown field `job_controls`", "`job_control`", "`identification`"],
        ),
        (
            "misspelt tag key",
            '[[devices]]\nname = "m"\nstation = "Cell"\nprotocol = "mqtt"\nbroker = "127.0.0.1:1883"\n'
            '[[devices.tags]]\nname = "T"\ntype = "float64"\ntopic = "t"\nunits = "C"\n',
            ["unknown field `units`", "`unit`", "`topic`"],
        ),
    ],
)
def test_check_rejects_a_bad_file(gateway_bin, tmp_path, case, text, must_mention):
    path = write_config(tmp_path, text, name=f"bad-{case.replace(' ', '-')}.toml")
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode != 0, f"{case} accepted:\n{describe(proc)}"
    for word in must_mention:
        assert word in proc.stderr, f"{case}: stderr does not name `{word}`\n{describe(proc)}"
    if case != "bad value":
        assert str(path) in proc.stderr, f"{case}: stderr does not name the file\n{describe(proc)}"


def test_check_rejects_a_missing_file(gateway_bin, tmp_path):
    path = tmp_path / "does-not-exist.toml"
    proc = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode != 0, describe(proc)
    assert str(path) in proc.stderr, describe(proc)


def test_print_config_shows_defaults_and_env_overrides(gateway_bin, tmp_path):
    proc = run(gateway_bin, "print-config", env={"FABRIQUE__OPCUA__PORT": "48999"}, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "port = 48999" in proc.stdout, describe(proc)
    config = tomllib.loads(proc.stdout)
    assert config["opcua"]["port"] == 48999
    line = config["line"]
    assert line["models"] == DEFAULT_MODELS
    assert line["max_text_length"] == 20
    assert line["recent_orders"] == 20
    assert len(line["step_durations_s"]) == 9
    for key in ("seed", "speed", "tick_ms", "orders_per_hour", "defect_rate"):
        assert key in config["simulation"], f"simulation.{key} missing from print-config"
    assert "host" in config["opcua"]


def test_print_config_layers_file_then_env(gateway_bin, tmp_path):
    path = write_config(tmp_path, VALID_CONFIG)
    proc = run(
        gateway_bin,
        "print-config",
        "--config",
        str(path),
        env={"FABRIQUE__OPCUA__PORT": "48999", "FABRIQUE__SIMULATION__SEED": "11"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    config = tomllib.loads(proc.stdout)
    assert config["opcua"]["port"] == 48999  # env beats file
    assert config["simulation"]["seed"] == 11  # env beats file
    assert config["simulation"]["speed"] == 10  # file beats default
    assert config["line"]["models"] == ["Classic", "Wave"]  # file
    assert config["line"]["max_text_length"] == 24  # file


def test_print_config_output_is_accepted_by_check(gateway_bin, tmp_path):
    proc = run(gateway_bin, "print-config", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    path = write_config(tmp_path, proc.stdout, name="printed.toml")
    check = run(gateway_bin, "check", "--config", str(path), cwd=tmp_path)
    assert check.returncode == 0, describe(check)
