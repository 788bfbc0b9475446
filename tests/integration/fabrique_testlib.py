"""Shared helpers and the expected shape of the Fabrique Gateway address space.

Everything here describes the gateway contract as seen by an independent OPC UA client
(python `asyncua`); the tests import it, conftest.py uses it to start and probe gateways.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

from asyncua import Client, ua

TYPES_URI = "urn:fabrique-gateway:types"
INSTANCES_URI = "urn:fabrique-gateway:instances"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "fabrique-gateway"

# Environment for the shared gateway: fast, deterministic, no spontaneous orders, no defects.
FAST_SIMULATION_ENV = {
    "FABRIQUE__SIMULATION__SPEED": "50",
    "FABRIQUE__SIMULATION__DEFECT_RATE": "0",
    "FABRIQUE__SIMULATION__ORDERS_PER_HOUR": "0",
    "FABRIQUE__SIMULATION__SEED": "7",
}

# ---------------------------------------------------------------------------------------------
# Expected address space
# ---------------------------------------------------------------------------------------------

# Type definitions (numeric ids in the types namespace) and their browse names.
TYPE_IDS = {
    "SiteType": 1001,
    "LineType": 1002,
    "ProductionStepType": 1003,
    "StationType": 1004,
    "DeviceType": 1005,
    "OrderType": 1006,
    "IndicatorsType": 1007,
    "VisitsType": 1008,
    "OrdersType": 1010,
    "StopType": 1011,
    "SurveyType": 1012,
    "DeviceStatusType": 1009,
    "KioskType": 1015,
}

# Namespace-0 data type ids.
BOOLEAN = 1
UINT16 = 5
UINT32 = 7
UINT64 = 9
DOUBLE = 11
STRING = 12
DATETIME = 13
RANGE = 884
EUINFORMATION = 887
ARGUMENT = 296

DATA_TYPE_NAMES = {
    BOOLEAN: "Boolean",
    UINT16: "UInt16",
    UINT32: "UInt32",
    DOUBLE: "Double",
    STRING: "String",
    DATETIME: "DateTime",
    RANGE: "Range",
    EUINFORMATION: "EUInformation",
    ARGUMENT: "Argument",
}

# Built-in data types whose value must arrive as exactly this variant type.
BUILTIN_VARIANT = {
    1: ua.VariantType.Boolean,
    2: ua.VariantType.SByte,
    3: ua.VariantType.Byte,
    4: ua.VariantType.Int16,
    5: ua.VariantType.UInt16,
    6: ua.VariantType.Int32,
    7: ua.VariantType.UInt32,
    8: ua.VariantType.Int64,
    9: ua.VariantType.UInt64,
    10: ua.VariantType.Float,
    11: ua.VariantType.Double,
    12: ua.VariantType.String,
    13: ua.VariantType.DateTime,
}

STEP_NAMES = [
    "Design",
    "Programming and planning",
    "Material supply",
    "Additive manufacturing",
    "Machining",
    "Laser engraving",
    "Robotic assembly",
    "Metrology check",
    "Packaging and delivery",
]

STEP_VARIABLES = {
    "Number": UINT16,
    "Name": STRING,
    "State": STRING,
    "CurrentOrder": STRING,
    "Progress": DOUBLE,
    "LastCycleTime": DOUBLE,
    "Count": UINT32,
}

DEFAULT_MODELS = ["Classic", "Wave", "Hexa", "Minimal"]

# Default truck: "Station/Device" -> {tag: data type}
DEVICE_TAGS: dict[str, dict[str, int]] = {
    "Printing/Printer3D": {
        "State": STRING,
        "JobName": STRING,
        "JobProgress": DOUBLE,
        "NozzleTemperature": DOUBLE,
        "BedTemperature": DOUBLE,
        "PrintedParts": UINT32,
        "StandbyTemperature": DOUBLE,
    },
    "Machining/CncMill": {
        "State": STRING,
        "Program": STRING,
        "SpindleSpeed": DOUBLE,
        "FeedRate": DOUBLE,
        "SpindleLoad": DOUBLE,
        "PartCount": UINT32,
        "FeedOverride": DOUBLE,
    },
    "Engraving/LaserEngraver": {
        "State": STRING,
        "JobProgress": DOUBLE,
        "EngravedText": STRING,
        "LaserPower": DOUBLE,
        "Jobs": UINT32,
        "PowerSetpoint": DOUBLE,
    },
    "Assembly/Cobot": {
        **{f"Joint{i}": DOUBLE for i in range(1, 7)},
        "ProgramState": STRING,
        "Program": STRING,
        "Cycles": UINT32,
        "SpeedOverride": DOUBLE,
    },
    "Metrology/Cmm": {
        "State": STRING,
        "Width": DOUBLE,
        "Thickness": DOUBLE,
        "SlotWidth": DOUBLE,
        "Verdict": STRING,
        "LastOrder": STRING,
        "Measured": UINT32,
        "Rejected": UINT32,
    },
    "Logistics/ConveyorPlc": {
        "Running": BOOLEAN,
        "Speed": DOUBLE,
        "MotorCurrent": DOUBLE,
        "ItemsTransported": UINT32,
        "SpeedSetpoint": DOUBLE,
    },
    "Logistics/PackagingUnit": {
        "State": STRING,
        "Packed": UINT32,
        "LastLabel": STRING,
    },
}

DEVICE_PROPERTIES = ["Manufacturer", "Model", "SerialNumber", "Protocol"]
DEVICE_STATUS = {
    "Connected": BOOLEAN,
    "LastError": STRING,
    "Reconnects": UINT32,
    "LastReadTime": DATETIME,
    "RequestsOk": UINT64,
    "RequestsFailed": UINT64,
}

# Writable tags: full path -> (low, high) of their EURange.
WRITABLE_TAGS = {
    "Fabrique/Stations/Printing/Printer3D/StandbyTemperature": (0.0, 250.0),
    "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint": (0.0, 30.0),
    "Fabrique/Stations/Machining/CncMill/FeedOverride": (0.0, 150.0),
    "Fabrique/Stations/Engraving/LaserEngraver/PowerSetpoint": (10.0, 100.0),
    "Fabrique/Stations/Assembly/Cobot/SpeedOverride": (0.0, 100.0),
}

ORDER_SLOT_VARIABLES = {
    "Id": STRING,
    "Model": STRING,
    "Text": STRING,
    "State": STRING,
    "Verdict": STRING,
    "Step": UINT16,
    "SubmittedAt": DATETIME,
    "CompletedAt": DATETIME,
}
RECENT_SLOTS = 20

LINE_VARIABLES = {
    "State": STRING,
    "Mode": STRING,
    "Models": STRING,
    "OrdersQueued": UINT32,
    "OrdersInProgress": UINT32,
    "PartsDelivered": UINT32,
    "PartsScrapped": UINT32,
}
LINE_METHODS = ["SubmitOrder", "Start", "Stop"]

# Standard (namespace 0) property names that may hang below instance nodes.
STANDARD_PROPERTY_NAMES = {"EngineeringUnits", "EURange", "InputArguments", "OutputArguments"}


def expected_data_types() -> dict[str, int]:
    """Full path -> expected ns=0 DataType id, for every tag and property the contract types."""
    out: dict[str, int] = {"Fabrique/Name": STRING}
    for name in ["Town", "Venue", "FirstDay", "LastDay"]:
        out[f"Fabrique/Stop/{name}"] = STRING
    for name, dt in LINE_VARIABLES.items():
        out[f"Fabrique/Line/{name}"] = dt
    for n in range(1, 10):
        for name, dt in STEP_VARIABLES.items():
            out[f"Fabrique/Line/Steps/Step{n}/{name}"] = dt
    for device, tags in DEVICE_TAGS.items():
        base = f"Fabrique/Stations/{device}"
        for name in DEVICE_PROPERTIES:
            out[f"{base}/{name}"] = STRING
        for name, dt in DEVICE_STATUS.items():
            out[f"{base}/Status/{name}"] = dt
        for name, dt in tags.items():
            out[f"{base}/{name}"] = dt
    out["Fabrique/Orders/LastOrderId"] = STRING
    out["Fabrique/Orders/Submitted"] = UINT32
    for slot in range(1, RECENT_SLOTS + 1):
        for name, dt in ORDER_SLOT_VARIABLES.items():
            out[f"{slot_path(slot)}/{name}"] = dt
    return out


def slot_path(slot: int) -> str:
    return f"Fabrique/Orders/Recent/Order{slot:02d}"


def slot_of_order(order_id: str, slots: int = RECENT_SLOTS) -> int:
    """`ORD-00000n` lives in slot ((n-1) mod slots)+1."""
    n = int(order_id.split("-", 1)[1])
    return (n - 1) % slots + 1


def is_set_datetime(value: Any) -> bool:
    """A DateTime that was actually set (not null / 1601 / None)."""
    return value is not None and getattr(value, "year", 0) >= 2000


# ---------------------------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------------------------


async def wait_for(
    condition: Callable[[], Any | Awaitable[Any]],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str | Callable[[], str] = "condition",
) -> Any:
    """Poll `condition` (sync or async) until it returns a truthy value; return that value.

    Fails with an AssertionError naming `what` after `timeout` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            description = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {description}")
        await asyncio.sleep(interval)


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a process's log, for a failure message (never raises)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process environment without any FABRIQUE* variable, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("FABRIQUE")}
    env.setdefault("RUST_LOG", "info")
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(overrides)
    return env


def same_node(a: ua.NodeId, b: ua.NodeId) -> bool:
    return (a.NamespaceIndex, a.Identifier) == (b.NamespaceIndex, b.Identifier)


def status_name(code: ua.StatusCode | int) -> str:
    value = code.value if isinstance(code, ua.StatusCode) else code
    return ua.StatusCode(value).name


# ---------------------------------------------------------------------------------------------
# Gateway process
# ---------------------------------------------------------------------------------------------


# Every test gateway gets this admin token for its HTTP admin endpoints (`Authorization: Bearer`).
ADMIN_TOKEN = "test-admin-token"


class GatewayStartError(Exception):
    pass


class Gateway:
    """One gateway subprocess on a free loopback port, logging to a file."""

    def __init__(
        self,
        binary: Path,
        log_path: Path,
        env: dict[str, str],
        name: str = "gateway",
        args: list[str] | None = None,
    ):
        self.binary = binary
        self.args = ["run"] if args is None else list(args)
        self.log_path = log_path
        self.name = name
        self.port = free_port()
        self.http_port = free_port()
        # One data directory per gateway name: a gateway restarted under the same name finds
        # its buffers and history again; two gateways of one test never share a database.
        self.data_dir = log_path.parent / f"{name}-data"
        self.env = clean_env(
            **{
                "FABRIQUE__OPCUA__HOST": "127.0.0.1",
                "FABRIQUE__OPCUA__PORT": str(self.port),
                "FABRIQUE__HTTP__HOST": "127.0.0.1",
                "FABRIQUE__HTTP__PORT": str(self.http_port),
                "FABRIQUE__STORAGE__DATA_DIR": str(self.data_dir),
                "FABRIQUE_ADMIN_TOKEN": ADMIN_TOKEN,
                # Tests send thousands of requests from one address; test_http_guards.py turns
                # the per-client limit back on.
                "FABRIQUE__HTTP__PUBLIC_RATE_PER_MINUTE": "0",
                **env,
            }
        )
        self.proc: subprocess.Popen | None = None
        self.cache: dict[str, Any] = {}
        self._log_file = None

    @property
    def url(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"### {self.binary} {' '.join(self.args)}, port {self.port}\n".encode())
        self._log_file.flush()
        self.proc = subprocess.Popen(
            [str(self.binary), *self.args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=str(self.log_path.parent),
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll until a client connects and finds the instances namespace."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GatewayStartError(
                    f"gateway exited with code {self.proc.returncode} before accepting clients\n"
                    f"--- {self.log_path} ---\n{self.log_tail()}"
                )
            try:
                _run_in_thread(_probe(self.url), timeout=15)
                return
            except Exception as e:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = e
                time.sleep(0.25)
        raise GatewayStartError(
            f"gateway did not accept an OPC UA client on {self.url} within {timeout:.0f} s "
            f"(last error: {last_error!r})\n--- {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 150) -> str:
        return log_tail(self.log_path, lines)


async def _probe(url: str) -> None:
    # Whatever the security configuration, the endpoint list answers once the server runs.
    client = Client(url, timeout=3)
    endpoints = await client.connect_and_get_server_endpoints()
    if not endpoints:
        raise RuntimeError("no endpoints yet")


def _run_in_thread(coro: Awaitable[Any], timeout: float) -> Any:
    """Run a coroutine on its own event loop in a worker thread (safe from sync fixtures)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------


@dataclass
class Opc:
    """A connected client plus the resolved namespace indexes."""

    client: Client
    inst: int
    types: int
    gateway: Gateway

    def nodeid(self, path: str) -> ua.NodeId:
        return ua.NodeId(path, self.inst)

    def node(self, path: str):
        return self.client.get_node(self.nodeid(path))

    def type_id(self, type_name: str) -> ua.NodeId:
        return ua.NodeId(TYPE_IDS[type_name], self.types)

    async def read(self, path: str) -> Any:
        return await self.node(path).read_value()

    async def read_many(self, paths: list[str], attr=ua.AttributeIds.Value) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for chunk in _chunks(paths, 200):
            out.extend(await self.client.uaclient.read_attributes([self.nodeid(p) for p in chunk], attr))
        return out

    async def read_nodeids(self, nodeids: list[ua.NodeId], attr=ua.AttributeIds.Value) -> list[ua.DataValue]:
        out: list[ua.DataValue] = []
        for chunk in _chunks(nodeids, 200):
            out.extend(await self.client.uaclient.read_attributes(list(chunk), attr))
        return out

    async def write_status(self, path: str, variant: ua.Variant) -> ua.StatusCode:
        """Write a Value without timestamps; return the per-node status (no exception)."""
        codes = await self.client.uaclient.write_attributes(
            [self.nodeid(path)], [ua.DataValue(Value=variant)], ua.AttributeIds.Value
        )
        return codes[0]

    async def call(self, object_path: str, method: str, *args: ua.Variant) -> ua.CallMethodResult:
        """Call a method; return the raw result (status not checked)."""
        req = ua.CallMethodRequest()
        req.ObjectId = self.nodeid(object_path)
        req.MethodId = self.nodeid(f"{object_path}/{method}")
        req.InputArguments = list(args)
        results = await self.client.uaclient.call([req])
        return results[0]

    async def submit_order(self, model: str, text: str) -> ua.CallMethodResult:
        return await self.call(
            "Fabrique/Line",
            "SubmitOrder",
            ua.Variant(model, ua.VariantType.String),
            ua.Variant(text, ua.VariantType.String),
        )


# The demo profile's users (the README, "OPC UA security"); tests write and call as the operator.
DEMO_OPERATOR = ("operator", "operator")


@contextlib.asynccontextmanager
async def connect(gateway: Gateway, user: str | None = DEMO_OPERATOR[0], password: str | None = DEMO_OPERATOR[1]):
    """A session on the None endpoint; `user=None` for an anonymous one."""
    client = Client(gateway.url, timeout=10)
    if user is not None:
        client.set_user(user)
        client.set_password(password or "")
    await client.connect()
    try:
        inst = await client.get_namespace_index(INSTANCES_URI)
        types = await client.get_namespace_index(TYPES_URI)
        yield Opc(client=client, inst=inst, types=types, gateway=gateway)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ---------------------------------------------------------------------------------------------
# Browsing
# ---------------------------------------------------------------------------------------------


@dataclass
class TreeNode:
    path: str
    nodeid: ua.NodeId
    browse_name: ua.QualifiedName
    node_class: ua.NodeClass
    reference_type: ua.NodeId
    type_definition: ua.NodeId | None
    parent: str | None
    children: list[str] = field(default_factory=list)


async def _browse_many(client: Client, nodeids: list[ua.NodeId], ref_type: int, direction=ua.BrowseDirection.Forward):
    """Browse several nodes at once; return one list of ReferenceDescriptions per node."""
    out: list[list[ua.ReferenceDescription]] = []
    for chunk in _chunks(nodeids, 50):
        params = ua.BrowseParameters()
        params.View.Timestamp = ua.get_win_epoch()  # no view: a set timestamp means "a view"
        params.RequestedMaxReferencesPerNode = 0
        for nid in chunk:
            desc = ua.BrowseDescription()
            desc.NodeId = nid
            desc.BrowseDirection = direction
            desc.ReferenceTypeId = ua.NodeId(ref_type)
            desc.IncludeSubtypes = True
            desc.NodeClassMask = 0
            desc.ResultMask = ua.BrowseResultMask.All
            params.NodesToBrowse.append(desc)
        results = await client.uaclient.browse(params)
        assert len(results) == len(chunk), "Browse returned a different number of results"
        for nid, result in zip(chunk, results):
            assert result.StatusCode.is_good(), f"Browse of {nid.to_string()} failed: {result.StatusCode}"
            refs = list(result.References or [])
            cp = result.ContinuationPoint
            while cp:
                nparams = ua.BrowseNextParameters()
                nparams.ContinuationPoints = [cp]
                nparams.ReleaseContinuationPoints = False
                more = await client.uaclient.browse_next(nparams)
                refs.extend(more[0].References or [])
                cp = more[0].ContinuationPoint
            out.append(refs)
    return out


async def browse_children(client: Client, nodeid: ua.NodeId) -> list[ua.ReferenceDescription]:
    return (await _browse_many(client, [nodeid], ua.ObjectIds.HierarchicalReferences))[0]


async def browse_tree(opc: Opc) -> dict[str, TreeNode]:
    """Every node reachable from Objects/Fabrique by forward hierarchical references.

    Keyed by browse path ("Fabrique/Line/State"). Cached per gateway (the shape is static).
    """
    cached = opc.gateway.cache.get("tree")
    if cached is not None:
        return cached
    top = await browse_children(opc.client, ua.NodeId(ua.ObjectIds.ObjectsFolder))
    matches = [r for r in top if r.BrowseName.Name == "Fabrique"]
    assert len(matches) == 1, f"expected one `Fabrique` below Objects, found {len(matches)}"
    root = matches[0]
    tree: dict[str, TreeNode] = {}
    seen = {(root.NodeId.NamespaceIndex, root.NodeId.Identifier)}
    tree["Fabrique"] = TreeNode(
        path="Fabrique",
        nodeid=ua.NodeId(root.NodeId.Identifier, root.NodeId.NamespaceIndex),
        browse_name=root.BrowseName,
        node_class=root.NodeClass,
        reference_type=root.ReferenceTypeId,
        type_definition=root.TypeDefinition,
        parent=None,
    )
    frontier = ["Fabrique"]
    while frontier:
        refs_per_node = await _browse_many(
            opc.client, [tree[p].nodeid for p in frontier], ua.ObjectIds.HierarchicalReferences
        )
        next_frontier = []
        for parent_path, refs in zip(frontier, refs_per_node):
            for ref in refs:
                key = (ref.NodeId.NamespaceIndex, ref.NodeId.Identifier)
                if key in seen:
                    continue
                seen.add(key)
                path = f"{parent_path}/{ref.BrowseName.Name}"
                assert path not in tree, f"two children of {parent_path} share the browse name {ref.BrowseName.Name}"
                tree[path] = TreeNode(
                    path=path,
                    nodeid=ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex),
                    browse_name=ref.BrowseName,
                    node_class=ref.NodeClass,
                    reference_type=ref.ReferenceTypeId,
                    type_definition=ref.TypeDefinition,
                    parent=parent_path,
                )
                tree[parent_path].children.append(path)
                next_frontier.append(path)
        frontier = next_frontier
    opc.gateway.cache["tree"] = tree
    return tree


def child_names(tree: dict[str, TreeNode], path: str) -> set[str]:
    return {tree[c].browse_name.Name for c in tree[path].children}


async def type_definitions(opc: Opc, nodeids: list[ua.NodeId]) -> list[list[ua.NodeId]]:
    """Targets of the HasTypeDefinition references of each node."""
    refs = await _browse_many(opc.client, nodeids, ua.ObjectIds.HasTypeDefinition)
    return [[ua.NodeId(r.NodeId.Identifier, r.NodeId.NamespaceIndex) for r in rs] for rs in refs]


# ---------------------------------------------------------------------------------------------
# Subscriptions
# ---------------------------------------------------------------------------------------------


class Recorder:
    """Subscription handler recording every data change, in arrival order."""

    def __init__(self, opc: Opc):
        self.opc = opc
        self.events: list[tuple[str, Any, ua.DataValue]] = []

    def _path(self, node) -> str:
        ident = node.nodeid.Identifier
        return ident if isinstance(ident, str) else node.nodeid.to_string()

    def datachange_notification(self, node, val, data) -> None:
        self.events.append((self._path(node), val, data.monitored_item.Value))

    def status_change_notification(self, status) -> None:  # pragma: no cover - diagnostics only
        self.events.append(("<status>", status, None))

    def values(self, path: str, since: int = 0) -> list[Any]:
        return [v for p, v, _ in self.events[since:] if p == path]

    def mark(self) -> int:
        return len(self.events)
