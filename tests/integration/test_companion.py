"""The truck as a client that knows only the OPC UA companion specifications sees it: Machinery's
Objects/Machines, MachineIdentificationType, the MachineryItemState and MachineryOperationMode
state machines, DI's DeviceSet, Robotics' MotionDeviceSystemType and Machine Tools'
MachineToolType. Every path below is built from standard browse names and namespace URIs;
only the machines' own names come from the gateway (they are listed, not assumed)."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from asyncua import ua

from fabrique_testlib import connect, free_port, same_node, wait_for

DI = "http://opcfoundation.org/UA/DI/"
MACHINERY = "http://opcfoundation.org/UA/Machinery/"
ROBOTICS = "http://opcfoundation.org/UA/Robotics/"
MACHINE_TOOL = "http://opcfoundation.org/UA/MachineTool/"
TYPES = "urn:fabrique-gateway:types"

TRUCK_MACHINES = {
    # name: (namespace, type id) of its TypeDefinition
    "Printer3D": (MACHINE_TOOL, 13),
    "CncMill": (MACHINE_TOOL, 13),
    "LaserEngraver": (MACHINE_TOOL, 13),
    "Cobot": (ROBOTICS, 1002),
    "Cmm": (TYPES, 1013),
    "ConveyorPlc": (TYPES, 1013),
    "PackagingUnit": (TYPES, 1013),
}
ITEM_STATES = {"NotAvailable", "OutOfService", "Executing", "NotExecuting"}
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "partner-machines.toml"


class Standard:
    """Namespace indexes resolved from the URIs, and browse helpers with standard names."""

    def __init__(self, client, ns: dict[str, int]):
        self.client = client
        self.ns = ns

    @classmethod
    async def of(cls, client) -> "Standard":
        array = await client.get_namespace_array()
        return cls(client, {uri: array.index(uri) for uri in (DI, MACHINERY, ROBOTICS, MACHINE_TOOL, TYPES)})

    def id(self, uri: str, number: int) -> ua.NodeId:
        return ua.NodeId(number, self.ns[uri])

    def machines(self):
        return self.client.get_node(self.id(MACHINERY, 1001))

    def device_set(self):
        return self.client.get_node(self.id(DI, 5001))

    async def child(self, node, *path: tuple[str, str]):
        """Follow `path` ((namespace URI, name), ...) from `node` with TranslateBrowsePaths."""
        return await node.get_child([f"{self.ns[uri]}:{name}" for uri, name in path])

    async def listed(self, node, ref=ua.ObjectIds.Organizes) -> dict[str, object]:
        # The names come with the Browse itself: reading each child's BrowseName afterwards
        # races with a reload that removes it in between.
        refs = await node.get_references(refs=ref, direction=ua.BrowseDirection.Forward)
        return {r.BrowseName.Name: self.client.get_node(r.NodeId) for r in refs}

    async def item_state(self, machine) -> str:
        state = await self.child(
            machine, (MACHINERY, "MachineryBuildingBlocks"), (MACHINERY, "MachineryItemState")
        )
        current = await state.get_child(["0:CurrentState"])
        return (await current.read_value()).Text


async def test_machines_folder_lists_every_machine_with_its_type(opc):
    std = await Standard.of(opc.client)
    machines = await std.listed(std.machines())
    assert set(machines) == set(TRUCK_MACHINES)
    for name, (uri, number) in TRUCK_MACHINES.items():
        type_id = await machines[name].read_type_definition()
        assert same_node(type_id, std.id(uri, number)), f"{name}: {type_id}"


async def test_every_machine_has_a_complete_identification(opc):
    std = await Standard.of(opc.client)
    town = await opc.read("Fabrique/Stop/Town")
    for name, machine in (await std.listed(std.machines())).items():
        ident = await std.child(machine, (DI, "Identification"))
        # Reached by HasAddIn, as Machinery says.
        addins = await machine.get_children(refs=ua.ObjectIds.HasAddIn)
        assert any(same_node(a.nodeid, ident.nodeid) for a in addins), name
        values = {}
        for uri, field in [(DI, "Manufacturer"), (DI, "SerialNumber"), (DI, "ProductInstanceUri"),
                           (DI, "Model"), (DI, "ProductCode"), (MACHINERY, "YearOfConstruction"),
                           (DI, "SoftwareRevision"), (MACHINERY, "Location")]:
            values[field] = await (await std.child(ident, (uri, field))).read_value()
        assert values["Manufacturer"].Text, name
        assert values["Model"].Text, name
        assert values["SerialNumber"], name
        assert values["ProductInstanceUri"].startswith("urn:"), name
        assert values["ProductCode"], name
        assert 2000 <= values["YearOfConstruction"] <= 2100, name
        assert values["SoftwareRevision"], name
        assert values["Location"] == town, name


async def test_state_machines_are_consistent(opc):
    std = await Standard.of(opc.client)
    for name, machine in (await std.listed(std.machines())).items():
        blocks = await std.child(machine, (MACHINERY, "MachineryBuildingBlocks"))
        for block, allowed in [("MachineryItemState", ITEM_STATES),
                               ("MachineryOperationMode", {"None", "Maintenance", "Setup", "Processing"})]:
            state = await std.child(blocks, (MACHINERY, block))
            current = await state.get_child(["0:CurrentState"])
            text = (await current.read_value()).Text
            assert text in allowed, f"{name}/{block}: {text}"
            # CurrentState/Id is the state object of the type, whose browse name is the state.
            state_id = await (await current.get_child(["0:Id"])).read_value()
            assert state_id.NamespaceIndex == std.ns[MACHINERY], f"{name}/{block}: {state_id}"
            assert (await opc.client.get_node(state_id).read_browse_name()).Name == text


async def test_item_state_follows_the_order_at_the_machines_step(opc):
    std = await Standard.of(opc.client)
    printer = (await std.listed(std.machines()))["Printer3D"]
    await opc.submit_order("Classic", "Std")
    await wait_for(lambda: _is(std.item_state(printer), "Executing"), 60,
                   what="the 3D printer's MachineryItemState to become Executing")
    await wait_for(lambda: _is(std.item_state(printer), "NotExecuting"), 60,
                   what="the 3D printer's MachineryItemState to go back to NotExecuting")


async def _is(value, expected):
    return (await value) == expected


async def test_cobot_is_a_motion_device_system_with_six_moving_axes(opc):
    std = await Standard.of(opc.client)
    in_device_set = await std.listed(std.device_set(), ua.ObjectIds.HasComponent)
    cobot = in_device_set["Cobot"]
    assert same_node(await cobot.read_type_definition(), std.id(ROBOTICS, 1002))
    for folder in ["MotionDevices", "Controllers", "SafetyStates"]:
        await std.child(cobot, (ROBOTICS, folder))
    devices = await std.listed(await std.child(cobot, (ROBOTICS, "MotionDevices")), ua.ObjectIds.HasComponent)
    assert len(devices) == 1
    arm = next(iter(devices.values()))
    assert same_node(await arm.read_type_definition(), std.id(ROBOTICS, 1004))
    axes = await std.listed(await std.child(arm, (ROBOTICS, "Axes")), ua.ObjectIds.HasComponent)
    assert len(axes) == 6
    positions = []
    for name in sorted(axes):
        assert same_node(await axes[name].read_type_definition(), std.id(ROBOTICS, 16601))
        position = await std.child(axes[name], (DI, "ParameterSet"), (ROBOTICS, "ActualPosition"))
        unit = await (await position.get_child(["0:EngineeringUnits"])).read_value()
        assert unit.DisplayName.Text == "°"
        positions.append(position)
    task = await std.child(cobot, (ROBOTICS, "Controllers"))
    assert await task.get_children()
    first = [await p.read_value() for p in positions]
    await opc.submit_order("Wave", "Axes")

    async def moved():
        now = [await p.read_value() for p in positions]
        return sum(1 for a, b in zip(first, now) if abs(a - b) > 0.5) >= 3

    await wait_for(moved, 90, what="at least three joints of the cobot to move")


async def test_cnc_is_a_machine_tool_whose_spindle_turns(opc):
    std = await Standard.of(opc.client)
    cnc = (await std.listed(std.machines()))["CncMill"]
    spindle = await std.child(cnc, (MACHINE_TOOL, "Monitoring"), (MACHINE_TOOL, "Spindle"))
    assert same_node(await spindle.read_type_definition(), std.id(MACHINE_TOOL, 22))
    speed = await spindle.get_child([f"{opc.inst}:SpindleSpeed"])
    rotating = await std.child(spindle, (MACHINE_TOOL, "IsRotating"))
    mode = await std.child(cnc, (MACHINE_TOOL, "Monitoring"), (MACHINE_TOOL, "MachineTool"),
                           (MACHINE_TOOL, "OperationMode"))
    assert await mode.read_value() == 1  # MachineOperationMode Automatic: the line runs
    program = await std.child(cnc, (MACHINE_TOOL, "Production"), (MACHINE_TOOL, "ActiveProgram"))
    assert await (await std.child(program, (MACHINE_TOOL, "Name"))).read_value() == await opc.read(
        "Fabrique/Stations/Machining/CncMill/Program")
    job = await std.child(cnc, (MACHINE_TOOL, "Production"), (MACHINE_TOOL, "ProductionPlan"),
                          (MACHINE_TOOL, "Job"))
    job_id = await std.child(job, (MACHINE_TOOL, "Identifier"))
    result = await opc.submit_order("Hexa", "Spin")
    order_id = result.OutputArguments[0].Value

    async def turning():
        return (await speed.read_value()) > 1000 and await rotating.read_value()

    await wait_for(turning, 90, what="the CNC spindle to turn (speed above 1000 rpm, IsRotating)")
    # The order being machined is the machine tool's job.
    await wait_for(lambda: _is(job_id.read_value(), order_id), 90, what=f"job {order_id} on the CNC")


async def test_steps_and_machines_reference_each_other(opc):
    std = await Standard.of(opc.client)
    performed_by = std.id(TYPES, 4001)
    step5 = opc.node("Fabrique/Line/Steps/Step5")
    machines = await step5.get_referenced_nodes(refs=performed_by, direction=ua.BrowseDirection.Forward)
    cnc = (await std.listed(std.machines()))["CncMill"]
    assert [m.nodeid for m in machines] == [cnc.nodeid]
    steps = await cnc.get_referenced_nodes(refs=performed_by, direction=ua.BrowseDirection.Inverse)
    assert [s.nodeid for s in steps] == [step5.nodeid]


async def test_partner_equipment_takes_its_place_by_configuration(gateway_factory, tmp_path):
    # Nothing listens on these ports: the partners stay disconnected.
    text = EXAMPLE.read_text()
    text = text.replace("127.0.0.1:5020", f"127.0.0.1:{free_port()}")
    text = text.replace("127.0.0.1:1883", f"127.0.0.1:{free_port()}")
    config = tmp_path / "partners.toml"
    config.write_text(text)
    gw = gateway_factory(name="partners", args=["run", "--config", str(config)])
    async with connect(gw) as opc:
        std = await Standard.of(opc.client)
        machines = await std.listed(std.machines())
        assert {"press", "arm"} <= set(machines)
        assert "sensor" not in machines
        press = machines["press"]
        assert same_node(await press.read_type_definition(), std.id(TYPES, 1013))
        ident = await std.child(press, (DI, "Identification"))
        assert (await (await std.child(ident, (DI, "Manufacturer"))).read_value()).Text == "ACME Presses"
        assert await (await std.child(ident, (MACHINERY, "YearOfConstruction"))).read_value() == 2021
        # A device that is not connected is NotAvailable.
        await wait_for(lambda: _is(std.item_state(press), "NotAvailable"), 30,
                       what="the disconnected press to be NotAvailable")
        device_set = await std.listed(std.device_set(), ua.ObjectIds.HasComponent)
        assert same_node(await device_set["sensor"].read_type_definition(), std.id(TYPES, 1014))
        arm = device_set["arm"]
        axes_folder = await std.child(arm, (ROBOTICS, "MotionDevices"), (ROBOTICS, "Arm"), (ROBOTICS, "Axes"))
        axes = await std.listed(axes_folder, ua.ObjectIds.HasComponent)
        assert sorted(axes) == [f"Axis{n}" for n in range(1, 7)]
        description = (await axes["Axis3"].read_description()).Text
        assert re.search(r"\bJ3\b", description), description


async def test_a_reload_adds_and_removes_machines(gateway_factory, tmp_path):
    def block(name: str, kind: str) -> str:
        return (f'[[devices]]\nname = "{name}"\nstation = "Partners"\nprotocol = "modbus"\n'
                f'address = "127.0.0.1:{free_port()}"\nkind = "{kind}"\n'
                f'identification = {{ manufacturer = "P", model = "M", serial = "{name}-1" }}\n'
                f'[[devices.tags]]\nname = "Cycles"\nregister = "holding:4"\ntype = "uint32"\n')

    config = tmp_path / "reload.toml"
    config.write_text(block("press", "machine"))
    gw = gateway_factory(name="reload-machines", args=["--config", str(config)])
    async with connect(gw) as opc:
        std = await Standard.of(opc.client)

        async def machine_names():
            return set(await std.listed(std.machines()))

        assert "press" in await machine_names()
        config.write_text(block("lathe", "machine_tool"))
        gw.proc.send_signal(signal.SIGHUP)
        await wait_for(lambda: _has(machine_names(), "lathe", "press"), 30,
                       what="lathe added to Objects/Machines and press removed by the reload")
        lathe = (await std.listed(std.machines()))["lathe"]
        assert same_node(await lathe.read_type_definition(), std.id(MACHINE_TOOL, 13))
        await wait_for(lambda: _is(std.item_state(lathe), "NotAvailable"), 30,
                       what="the disconnected lathe to be NotAvailable")


async def _has(names, present: str, absent: str) -> bool:
    names = await names
    return present in names and absent not in names
