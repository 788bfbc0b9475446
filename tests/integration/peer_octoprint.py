"""The real OctoPrint (1.11, with its virtual printer) as a peer for test_octoprint.py.

OctoPrint is big, so it lives in its own venv, tests/.venv-octoprint, installed from
tests/requirements-octoprint.txt by tests/run, or here on first use. Each server gets a fresh
basedir whose config.yaml keeps it on loopback: no first-run wizard, no online check, none of
the bundled plugins that phone home, the virtual printer on the VIRTUAL port with autoconnect.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from fabrique_testlib import REPO_ROOT, free_port, log_tail

VENV = REPO_ROOT / "tests" / ".venv-octoprint"
REQUIREMENTS = REPO_ROOT / "tests" / "requirements-octoprint.txt"
STAMP = VENV / ".requirements.installed"
OCTOPRINT = VENV / "bin" / "octoprint"

# Bundled plugins that would reach out to the internet or nag; none is needed by the API.
# Loopback only: never through a proxy the environment may name.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

DISABLED_PLUGINS = [
    "announcements",
    "softwareupdate",
    "pluginmanager",
    "tracking",
    "errortracking",
    "discovery",
    "backup",
    "firmware_check",
    "pi_support",
    "file_check",
]


class OctoPrintUnavailable(Exception):
    pass


def ensure_installed(timeout: float = 900) -> Path:
    """The `octoprint` executable, installing it into its venv if needed (idempotent)."""
    try:
        up_to_date = OCTOPRINT.is_file() and STAMP.read_bytes() == REQUIREMENTS.read_bytes()
    except OSError:
        up_to_date = False
    if up_to_date:
        return OCTOPRINT
    python = shutil.which("python3") or sys.executable
    steps = []
    if not (VENV / "bin" / "python").is_file():
        steps.append([python, "-m", "venv", str(VENV)])
    steps.append(
        [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]
    )
    for step in steps:
        try:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise OctoPrintUnavailable(f"`{' '.join(step)}` failed: {e}") from e
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
            raise OctoPrintUnavailable(f"`{' '.join(step)}` exited {proc.returncode}:\n{tail}")
    if not OCTOPRINT.is_file():
        raise OctoPrintUnavailable(f"{OCTOPRINT} missing after installing {REQUIREMENTS}")
    shutil.copyfile(REQUIREMENTS, STAMP)
    return OCTOPRINT


def config_yaml(api_key: str) -> str:
    """OctoPrint's config.yaml: JSON is valid YAML, which spares a YAML dependency."""
    config = {
        "api": {"key": api_key},
        "server": {
            "firstRun": False,
            "onlineCheck": {"enabled": False, "host": "127.0.0.1"},
            "pluginBlacklist": {"enabled": False},
        },
        "devel": {"virtualPrinter": {"enabled": True}},
        "serial": {"port": "VIRTUAL", "baudrate": 0, "autoconnect": True},
        "plugins": {"_disabled": DISABLED_PLUGINS},
    }
    return json.dumps(config, indent=2) + "\n"


class OctoPrintServer:
    """One OctoPrint process on 127.0.0.1, restartable on the same port and basedir."""

    def __init__(self, executable: Path, basedir: Path, api_key: str):
        self.executable = executable
        self.basedir = basedir
        self.api_key = api_key
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = basedir / "octoprint.log"
        basedir.mkdir(parents=True, exist_ok=True)
        (basedir / "config.yaml").write_text(config_yaml(api_key), encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> float:
        """Start and wait until the printer is connected; return how long that took (s)."""
        started = time.monotonic()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                str(self.executable),
                "serve",
                "--iknowwhatimdoing",  # the test machines run as root
                "--basedir",
                str(self.basedir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.basedir),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"OctoPrint exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = self.request("GET", "/api/printer")
                if status == 200 and body.get("temperature", {}).get("tool0"):
                    return time.monotonic() - started
            except (OSError, http.client.HTTPException, ValueError):
                # While it boots, OctoPrint's port may answer with a bare placeholder page.
                pass
            time.sleep(0.25)
        raise RuntimeError(f"OctoPrint not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None):
        """(HTTP status, decoded JSON or {}) of one API call."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("X-Api-Key", key or self.api_key)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(req, timeout=5) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else {}
            except ValueError:
                return e.code, {"raw": raw.decode(errors="replace")}

    def upload_and_print(self, name: str, gcode: str) -> int:
        """Upload a G-code file, select it and start printing; return the HTTP status."""
        boundary = "fabrique-octoprint-test"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n{gcode}\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="select"\r\n\r\ntrue\r\n',
            f'--{boundary}\r\nContent-Disposition: form-data; name="print"\r\n\r\ntrue\r\n',
            f"--{boundary}--\r\n",
        ]
        req = urllib.request.Request(
            self.url + "/api/files/local", data="".join(parts).encode(), method="POST"
        )
        req.add_header("X-Api-Key", self.api_key)
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        with _OPENER.open(req, timeout=10) as resp:
            return resp.status

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)
