"""Fixtures: the gateway binary, gateway subprocesses on free loopback ports, connected clients.

Run from this directory:  ../.venv/bin/python -m pytest -q
The binary comes from `cargo build` (override with FABRIQUE_GATEWAY_BIN).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fabrique_testlib import (
    DEFAULT_BIN,
    FAST_SIMULATION_ENV,
    Gateway,
    GatewayStartError,
    connect,
)

# Gateways currently running, so that a failing test shows their logs.
_RUNNING: list[Gateway] = []


def _binary_path() -> Path:
    return Path(os.environ.get("FABRIQUE_GATEWAY_BIN") or DEFAULT_BIN)


@pytest.fixture(scope="session")
def gateway_bin() -> Path:
    path = _binary_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"gateway binary not found or not executable: {path}\n"
            "Build it first with `cargo build` (from the repository root), "
            "or point FABRIQUE_GATEWAY_BIN at it.",
            returncode=1,
        )
    return path


def start_gateway(
    binary: Path, log_dir: Path, env: dict[str, str], name: str, args: list[str] | None = None
) -> Gateway:
    """Start a gateway and wait until a client can connect.

    A free port is picked by binding 127.0.0.1:0; should another process grab it before the
    gateway binds it, the gateway exits early and we retry once on a new port.
    """
    last_error: Exception | None = None
    for attempt in range(2):
        gw = Gateway(binary, log_dir / f"{name}-{attempt}.log", env, name=name, args=args)
        gw.start()
        _RUNNING.append(gw)
        try:
            gw.wait_ready(timeout=60)
            return gw
        except GatewayStartError as e:
            last_error = e
            exited_early = gw.proc is not None and gw.proc.poll() is not None
            stop_gateway(gw)
            if not exited_early:
                break
    pytest.fail(f"could not start the gateway ({name}): {last_error}", pytrace=False)


def stop_gateway(gw: Gateway) -> None:
    gw.stop()
    if gw in _RUNNING:
        _RUNNING.remove(gw)


@pytest.fixture(scope="session")
def gateway(gateway_bin, tmp_path_factory):
    """The shared gateway: speed 50, no defects, no spontaneous orders, seed 7."""
    gw = start_gateway(gateway_bin, tmp_path_factory.mktemp("gateway"), FAST_SIMULATION_ENV, "shared")
    yield gw
    stop_gateway(gw)


@pytest.fixture
def gateway_factory(gateway_bin, tmp_path):
    """Start extra, private gateways (stopped at the end of the test)."""
    started: list[Gateway] = []

    def factory(
        env: dict[str, str] | None = None, name: str = "private", args: list[str] | None = None
    ) -> Gateway:
        """`args` replaces the default `run` command line (e.g. `["--config", FILE]`)."""
        gw = start_gateway(gateway_bin, tmp_path, {**FAST_SIMULATION_ENV, **(env or {})}, name, args)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        stop_gateway(gw)


@pytest.fixture
async def opc(gateway):
    """A connected asyncua client on the shared gateway, with namespace indexes resolved."""
    async with connect(gateway) as o:
        yield o


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # A skipped test is a peer that did not run: tests/install guarantees every peer, so a skip
    # fails the run rather than pass unseen. FABRIQUE_ALLOW_SKIPS=1 for a partial local run.
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("FABRIQUE_ALLOW_SKIPS") != "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, which counts as a failure (set FABRIQUE_ALLOW_SKIPS=1 to allow): {reason}"
    if report.failed:
        for gw in _RUNNING:
            report.sections.append((f"gateway log: {gw.name} ({gw.log_path})", gw.log_tail()))
