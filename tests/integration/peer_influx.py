"""Real line-protocol databases for the InfluxDB sink tests, on 127.0.0.1 free ports.

- VictoriaMetrics (Debian `victoria-metrics`): accepts `/api/v2/write` and `/write`, read back
  with `/api/v1/export`; series are named `<measurement>_<field>`.
- InfluxDB 1.6 (Debian `influxdb`): `/write?db=`, read back with InfluxQL on `/query`.

Both are installed by .ci/run; every directory lives in the test's tmp dir.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fabrique_testlib import free_port, log_tail


def tools_missing() -> str | None:
    for tool in ("victoria-metrics", "influxd"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: install the Debian packages victoria-metrics and influxdb"
    return None


def http(method: str, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Server:
    name = "server"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        try:
            status, _ = http("GET", f"{self.url}/ping", timeout=1)
            return status in (200, 204)
        except OSError:
            return False

    def start(self, timeout: float = 30.0) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(self.workdir),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on {self.url}:\n{self.log_tail()}")

    def stop(self) -> None:
        """A clean stop (SIGTERM): what was acknowledged stays stored."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


class VictoriaMetrics(_Server):
    name = "victoria-metrics"

    def command(self) -> list[str]:
        return [
            "victoria-metrics",
            f"-storageDataPath={self.workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ]

    def ready(self) -> bool:
        try:
            status, _ = http("GET", f"{self.url}/health", timeout=1)
            return status == 200
        except OSError:
            return False

    def export(self, selector: str, start_s: float | None = None) -> list[dict]:
        """Every series matching `selector`: [{"metric": {...}, "values": [...], "timestamps": [ms]}]."""
        http("GET", f"{self.url}/internal/force_flush")
        query = {"match[]": selector}
        if start_s is not None:
            query["start"] = f"{start_s:.3f}"
        status, body = http("GET", f"{self.url}/api/v1/export?{urllib.parse.urlencode(query)}")
        assert status == 200, body
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


class InfluxDB1(_Server):
    name = "influxd"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.rpc_port = free_port()
        self.config = workdir / "influxdb.conf"
        d = workdir
        self.config.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d / 'meta'}"

[data]
  dir = "{d / 'data'}"
  wal-dir = "{d / 'wal'}"
  query-log-enabled = false

[hinted-handoff]
  dir = "{d / 'hh'}"

[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
""",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        return ["influxd", "run", "-config", str(self.config)]

    def query(self, q: str, db: str = "fabrique") -> dict:
        """InfluxQL over HTTP; returns the decoded JSON."""
        data = urllib.parse.urlencode({"q": q, "db": db}).encode()
        status, body = http("POST", f"{self.url}/query", data)
        assert status == 200, body
        return json.loads(body)

    def write(self, lines: str, db: str = "fabrique") -> tuple[int, bytes]:
        return http("POST", f"{self.url}/write?db={urllib.parse.quote(db)}", lines.encode())
