"""The systemd unit in deploy/: systemd accepts it, and the commands it runs work."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "fabrique-gateway.service"
INSTALLED_BIN = "/usr/local/bin/fabrique-gateway"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_accepts_the_unit(gateway_bin, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (package systemd)")
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_BIN, str(gateway_bin)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "fabrique-gateway.service" not in result.stderr, result.stderr


def test_the_unit_runs_the_gateway_with_its_directories(gateway_bin, tmp_path):
    settings = unit_settings()
    start = shlex.split(settings["ExecStart"][0])
    check = shlex.split(settings["ExecStartPre"][0])
    assert start[0] == INSTALLED_BIN and start[-1] == "run"
    assert check[:-1] == start[:-1] and check[-1] == "check"
    assert settings["StateDirectory"] == ["fabrique-gateway"]
    env = dict(value.split("=", 1) for value in settings["Environment"])
    state = "/var/lib/fabrique-gateway"
    assert settings["WorkingDirectory"] == [state]
    assert env["FABRIQUE__STORAGE__DATA_DIR"].startswith(state)
    assert env["FABRIQUE__OPCUA__PKI_DIR"].startswith(state)

    # The unit's own check command, on a real configuration, with the unit's environment.
    config = ROOT / "config" / "examples" / "modbus.toml"
    command = [str(gateway_bin), *check[1:]]
    command[command.index("--config") + 1] = str(config)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FABRIQUE")}
    result = subprocess.run(command, env={**clean, **env}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
