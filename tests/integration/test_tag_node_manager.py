"""`opcua.tag_node_manager`: tag variables served by the tag node manager (no node object per
tag) look and behave exactly as the in-memory nodes do. Two gateways with the same
configuration, one per setting, are compared node by node: the browse tree, every attribute of
every variable, inverse references, TranslateBrowsePaths, writes and subscriptions."""

from __future__ import annotations

import asyncio

from asyncua import ua

from fabrique_testlib import (
    WRITABLE_TAGS,
    Recorder,
    browse_tree,
    connect,
    status_name,
    wait_for,
)

ATTRIBUTES = [
    ua.AttributeIds.NodeId,
    ua.AttributeIds.NodeClass,
    ua.AttributeIds.BrowseName,
    ua.AttributeIds.DisplayName,
    ua.AttributeIds.Description,
    ua.AttributeIds.WriteMask,
    ua.AttributeIds.UserWriteMask,
    ua.AttributeIds.DataType,
    ua.AttributeIds.ValueRank,
    ua.AttributeIds.ArrayDimensions,
    ua.AttributeIds.AccessLevel,
    ua.AttributeIds.UserAccessLevel,
    ua.AttributeIds.MinimumSamplingInterval,
    ua.AttributeIds.Historizing,
    ua.AttributeIds.AccessLevelEx,
    ua.AttributeIds.EventNotifier,
]

SPEED_SETPOINT = "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint"
NOZZLE = "Fabrique/Stations/Printing/Printer3D/NozzleTemperature"


def env(tag_node_manager: bool) -> dict[str, str]:
    return {"FABRIQUE__OPCUA__TAG_NODE_MANAGER": "true" if tag_node_manager else "false"}


def shape(tree):
    """What a browse shows of each node, keyed by path. An object reached by two hierarchical
    references (HasComponent and HasNotifier) keeps whichever the walk met first, so only a
    variable's reference type is compared here (inverse_references compares them all)."""
    return {
        path: (
            n.nodeid.to_string(),
            n.browse_name.to_string(),
            int(n.node_class),
            n.reference_type.to_string() if n.node_class == ua.NodeClass.Variable else None,
            n.type_definition.to_string() if n.type_definition is not None else None,
        )
        for path, n in tree.items()
    }


def attribute_view(dv: ua.DataValue):
    return (dv.StatusCode.value, dv.Value.Value if dv.Value is not None else None)


async def read_all_attributes(opc, nodeids):
    out = {}
    for attr in ATTRIBUTES:
        values = await opc.read_nodeids(nodeids, attr)
        for nid, dv in zip(nodeids, values):
            out[(nid.to_string(), int(attr))] = attribute_view(dv)
    return out


async def inverse_references(opc, nodeid):
    desc = ua.BrowseDescription()
    desc.NodeId = nodeid
    desc.BrowseDirection = ua.BrowseDirection.Both
    desc.ReferenceTypeId = ua.NodeId(ua.ObjectIds.References)
    desc.IncludeSubtypes = True
    desc.NodeClassMask = 0
    desc.ResultMask = ua.BrowseResultMask.All
    params = ua.BrowseParameters()
    params.View.Timestamp = ua.get_win_epoch()
    params.NodesToBrowse.append(desc)
    result = (await opc.client.uaclient.browse(params))[0]
    assert result.StatusCode.is_good(), status_name(result.StatusCode)
    return sorted(
        (
            r.ReferenceTypeId.to_string(),
            r.IsForward,
            r.NodeId.to_string(),
            r.BrowseName.to_string(),
            int(r.NodeClass),
            r.TypeDefinition.to_string(),
        )
        for r in result.References
    )


async def translate(opc, start: ua.NodeId, names: list[ua.QualifiedName]):
    path = ua.BrowsePath()
    path.StartingNode = start
    for name in names:
        el = ua.RelativePathElement()
        el.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        el.IncludeSubtypes = True
        el.IsInverse = False
        el.TargetName = name
        path.RelativePath.Elements.append(el)
    result = (await opc.client.uaclient.translate_browsepaths_to_nodeids([path]))[0]
    return result.StatusCode.value, sorted(t.TargetId.to_string() for t in (result.Targets or []))


async def test_tag_node_manager_shows_the_same_address_space(gateway_factory):
    old = gateway_factory(env(False), name="in-memory")
    new = gateway_factory(env(True), name="tag-nm")
    async with connect(old) as a, connect(new) as b:
        assert a.inst == b.inst
        tree_a, tree_b = await browse_tree(a), await browse_tree(b)
        assert shape(tree_b) == shape(tree_a)
        variables = [
            n.nodeid
            for n in tree_a.values()
            if n.node_class == ua.NodeClass.Variable and n.nodeid.NamespaceIndex == a.inst
        ]
        assert len(variables) > 100, len(variables)
        attrs_a = await read_all_attributes(a, variables)
        attrs_b = await read_all_attributes(b, variables)
        differing = [k for k in attrs_a if attrs_a[k] != attrs_b[k]]
        # Values of properties (units, ranges) and of constants are compared too; tag values
        # change with the simulation and are compared below by type and quality only.
        assert not differing, [(k, attrs_a[k], attrs_b[k]) for k in differing[:10]]

        values_a = await a.read_nodeids(variables)
        values_b = await b.read_nodeids(variables)
        for nid, va, vb in zip(variables, values_a, values_b):
            assert va.Value.VariantType == vb.Value.VariantType or va.Value.Value is None or vb.Value.Value is None, nid

        # Both directions, every reference type: the parent, the type definition, the
        # properties, and the companion structure's references to the same tag.
        for path in (SPEED_SETPOINT, NOZZLE, f"{NOZZLE}/EngineeringUnits", "Fabrique/Line/State"):
            nid = a.nodeid(path)
            assert await inverse_references(b, nid) == await inverse_references(a, nid), path

        objects = ua.NodeId(ua.ObjectIds.ObjectsFolder)
        names = [ua.QualifiedName("Fabrique", a.inst)] + [
            ua.QualifiedName(p, a.inst) for p in NOZZLE.split("/")[1:]
        ]
        for path in (names, names + [ua.QualifiedName("EngineeringUnits", 0)], names[:-1] + [ua.QualifiedName("Nope", a.inst)]):
            found_a = await translate(a, objects, path)
            assert await translate(b, objects, path) == found_a, path
        assert (await translate(b, objects, names))[1] == [b.nodeid(NOZZLE).to_string()]


async def test_tag_node_manager_writes_as_before(gateway_factory):
    old = gateway_factory(env(False), name="in-memory")
    new = gateway_factory(env(True), name="tag-nm")
    cases = [
        (SPEED_SETPOINT, ua.Variant(99.0, ua.VariantType.Double)),
        (SPEED_SETPOINT, ua.Variant("fast", ua.VariantType.String)),
        (NOZZLE, ua.Variant(100.0, ua.VariantType.Double)),
        ("Fabrique/Line/State", ua.Variant("Stopped", ua.VariantType.String)),
    ]
    async with connect(old) as a, connect(new) as b:
        for path, variant in cases:
            code_a = await a.write_status(path, variant)
            code_b = await b.write_status(path, variant)
            assert code_b.value == code_a.value, f"{path} {variant}: {status_name(code_b)} vs {status_name(code_a)}"
        # A write the device accepts reads back at once.
        for path in sorted(WRITABLE_TAGS):
            low, high = WRITABLE_TAGS[path]
            value = (low + high) / 2
            code = await b.write_status(path, ua.Variant(value, ua.VariantType.Double))
            assert code.is_good(), f"{path}: {status_name(code)}"
            assert await b.read(path) == value, path
    async with connect(new, user=None) as viewer:
        code = await viewer.write_status(SPEED_SETPOINT, ua.Variant(10.0, ua.VariantType.Double))
        assert code.value == ua.StatusCodes.BadUserAccessDenied, status_name(code)
        level = await viewer.node(SPEED_SETPOINT).read_attribute(ua.AttributeIds.UserAccessLevel)
        assert not level.Value.Value & ua.AccessLevel.CurrentWrite.mask


async def test_tag_node_manager_reports_changes_to_subscribers(gateway_factory):
    new = gateway_factory(env(True), name="tag-nm")
    async with connect(new) as b:
        recorder = Recorder(b)
        sub = await b.client.create_subscription(50, recorder)
        try:
            await sub.subscribe_data_change([b.node(SPEED_SETPOINT), b.node(NOZZLE)])
            await wait_for(lambda: recorder.values(NOZZLE), timeout=20, what="a nozzle notification")
            mark = recorder.mark()
            assert (await b.write_status(SPEED_SETPOINT, ua.Variant(17.5, ua.VariantType.Double))).is_good()
            await wait_for(lambda: 17.5 in recorder.values(SPEED_SETPOINT, since=mark), timeout=20, what="the written value")
        finally:
            await sub.delete()
            await asyncio.sleep(0)
