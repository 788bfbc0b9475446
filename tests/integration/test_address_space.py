"""Shape of the address space: namespaces, browse paths, node ids, types, data types,
access levels, engineering units and ranges, and value quality."""

from __future__ import annotations

from asyncua import ua

from fabrique_testlib import (
    BUILTIN_VARIANT,
    DATA_TYPE_NAMES,
    DEFAULT_MODELS,
    DEVICE_PROPERTIES,
    DEVICE_STATUS,
    DEVICE_TAGS,
    DOUBLE,
    EUINFORMATION,
    INSTANCES_URI,
    LINE_METHODS,
    LINE_VARIABLES,
    ORDER_SLOT_VARIABLES,
    RANGE,
    RECENT_SLOTS,
    STANDARD_PROPERTY_NAMES,
    STEP_NAMES,
    STEP_VARIABLES,
    TYPE_IDS,
    TYPES_URI,
    WRITABLE_TAGS,
    browse_children,
    browse_tree,
    child_names,
    expected_data_types,
    same_node,
    slot_path,
    status_name,
    type_definitions,
    wait_for,
)

HAS_PROPERTY = ua.NodeId(ua.ObjectIds.HasProperty)
PROPERTY_TYPE = ua.NodeId(ua.ObjectIds.PropertyType)


def variables(tree):
    return [n for n in tree.values() if n.node_class == ua.NodeClass.Variable]


async def test_namespaces_are_registered(opc):
    ns_array = await opc.client.get_namespace_array()
    assert TYPES_URI in ns_array
    assert INSTANCES_URI in ns_array
    assert opc.inst == ns_array.index(INSTANCES_URI)
    assert opc.types == ns_array.index(TYPES_URI)
    assert opc.inst != opc.types
    assert 0 not in (opc.inst, opc.types)


async def test_endpoint_is_unsecured_and_anonymous(opc):
    endpoints = await opc.client.get_endpoints()
    port = opc.gateway.port
    none_policy = "http://opcfoundation.org/UA/SecurityPolicy#None"
    matching = [
        e
        for e in endpoints
        if e.SecurityMode == ua.MessageSecurityMode.None_ and e.SecurityPolicyUri == none_policy
    ]
    assert matching, f"no None/None endpoint in {[(e.EndpointUrl, e.SecurityPolicyUri) for e in endpoints]}"
    endpoint = matching[0]
    assert endpoint.EndpointUrl.rstrip("/") == f"opc.tcp://127.0.0.1:{port}", endpoint.EndpointUrl
    token_types = {t.TokenType for t in endpoint.UserIdentityTokens}
    assert ua.UserTokenType.Anonymous in token_types, token_types


async def test_object_types_exist_in_types_namespace(opc):
    for name, ident in TYPE_IDS.items():
        node = opc.client.get_node(ua.NodeId(ident, opc.types))
        browse_name = await node.read_browse_name()
        assert browse_name.Name == name, f"ns={opc.types};i={ident}"
        assert browse_name.NamespaceIndex == opc.types, f"{name} browse name namespace"
        assert await node.read_node_class() == ua.NodeClass.ObjectType, name


async def test_browse_by_names_from_objects_to_a_step_variable(opc):
    """Navigate Objects -> Fabrique -> Line -> Steps -> Step4 -> Name with Browse only."""
    current = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    for name in ["Fabrique", "Line", "Steps", "Step4", "Name"]:
        refs = await browse_children(opc.client, current)
        # `Name` is declared by ProductionStepType: its BrowseName is the declaration's.
        wanted = ua.QualifiedName(name, opc.types if name == "Name" else opc.inst)
        # One node; HasNotifier (hierarchical, the event notifier tree) may reach it twice.
        matches = list({r.NodeId.to_string(): r for r in refs if r.BrowseName == wanted}.values())
        assert len(matches) == 1, (
            f"expected one child {wanted.to_string()} below {current.to_string()}, "
            f"children are {[r.BrowseName.to_string() for r in refs]}"
        )
        current = ua.NodeId(matches[0].NodeId.Identifier, matches[0].NodeId.NamespaceIndex)
    assert matches[0].NodeClass == ua.NodeClass.Variable
    assert same_node(current, opc.nodeid("Fabrique/Line/Steps/Step4/Name"))
    assert await opc.client.get_node(current).read_value() == "Additive manufacturing"


async def test_tree_shape(opc):
    tree = await browse_tree(opc)
    problems: list[str] = []

    def expect_children(path: str, expected: set[str]):
        if path not in tree:
            problems.append(f"missing node {path}")
            return
        got = child_names(tree, path)
        if got != expected:
            problems.append(
                f"{path}: missing {sorted(expected - got)}, unexpected {sorted(got - expected)}"
            )

    def expect_class(path: str, node_class: ua.NodeClass):
        if path in tree and tree[path].node_class != node_class:
            problems.append(f"{path}: node class {tree[path].node_class.name}, expected {node_class.name}")

    expect_children(
        "Fabrique", {"Name", "Stop", "Line", "Stations", "Orders", "Indicators", "Visits"}
    )
    for obj in ["Stop", "Line", "Stations", "Orders", "Indicators", "Visits"]:
        expect_class(f"Fabrique/{obj}", ua.NodeClass.Object)
    expect_class("Fabrique/Name", ua.NodeClass.Variable)
    expect_children("Fabrique/Stop", {"Town", "Venue", "FirstDay", "LastDay", "Id", "Kind", "SetStop"})
    expect_class("Fabrique/Stop/SetStop", ua.NodeClass.Method)
    expect_class("Fabrique/Visits/CheckIn", ua.NodeClass.Method)
    expect_class("Fabrique/Visits/Survey", ua.NodeClass.Object)

    expect_children("Fabrique/Line", set(LINE_VARIABLES) | set(LINE_METHODS) | {"Steps"})
    for name in LINE_VARIABLES:
        expect_class(f"Fabrique/Line/{name}", ua.NodeClass.Variable)
    for name in LINE_METHODS:
        expect_class(f"Fabrique/Line/{name}", ua.NodeClass.Method)

    expect_children("Fabrique/Line/Steps", {f"Step{n}" for n in range(1, 10)})
    for n in range(1, 10):
        step = f"Fabrique/Line/Steps/Step{n}"
        expect_class(step, ua.NodeClass.Object)
        # `Trades`: the trades catalogue's names for the step (the visitor's journey).
        expect_children(step, set(STEP_VARIABLES) | {"Trades"})

    stations = {device.split("/")[0] for device in DEVICE_TAGS}
    # The kiosk of the visitor's journey: a station of the truck, with counters and Scan.
    expect_children("Fabrique/Stations", stations | {"Reception"})
    expect_children("Fabrique/Stations/Reception", {"Kiosk"})
    expect_children(
        "Fabrique/Stations/Reception/Kiosk",
        {"Scans", "Launched", "Rejected", "LastScan", "LastCode", "LastResult", "Scan",
         "DesignsCreated", "DesignsRefused"}
        # KioskType is a DI DeviceType: DI's mandatory nameplate.
        | {"Manufacturer", "Model", "SerialNumber", "SoftwareRevision", "HardwareRevision",
           "DeviceRevision", "DeviceManual", "RevisionCounter"},
    )
    expect_class("Fabrique/Stations/Reception/Kiosk/Scan", ua.NodeClass.Method)
    for station in stations:
        expect_class(f"Fabrique/Stations/{station}", ua.NodeClass.Object)
        expect_children(
            f"Fabrique/Stations/{station}",
            {d.split("/")[1] for d in DEVICE_TAGS if d.startswith(station + "/")},
        )
    for device, tags in DEVICE_TAGS.items():
        base = f"Fabrique/Stations/{device}"
        expect_class(base, ua.NodeClass.Object)
        expect_children(base, set(DEVICE_PROPERTIES) | {"Status"} | set(tags))
        expect_class(f"{base}/Status", ua.NodeClass.Object)
        expect_children(f"{base}/Status", set(DEVICE_STATUS))
        for prop in DEVICE_PROPERTIES:
            node = tree.get(f"{base}/{prop}")
            if node is None:
                continue
            if node.node_class != ua.NodeClass.Variable or not same_node(node.reference_type, HAS_PROPERTY):
                problems.append(f"{base}/{prop} should be a property (HasProperty), got {node.reference_type}")
        for tag in tags:
            expect_class(f"{base}/{tag}", ua.NodeClass.Variable)

    expect_children("Fabrique/Orders", {"LastOrderId", "Submitted", "Recent", "FindOrder"})
    expect_class("Fabrique/Orders/FindOrder", ua.NodeClass.Method)
    expect_children("Fabrique/Orders/Recent", {f"Order{n:02d}" for n in range(1, RECENT_SLOTS + 1)})
    for n in range(1, RECENT_SLOTS + 1):
        expect_class(slot_path(n), ua.NodeClass.Object)
        expect_children(slot_path(n), set(ORDER_SLOT_VARIABLES))

    assert not problems, "address space shape differs from the contract:\n" + "\n".join(problems)


async def declared_names(opc, type_id: ua.NodeId, cache: dict) -> dict[str, ua.QualifiedName]:
    """The browse names of the children that `type_id` and its supertypes declare, by name."""
    key = type_id.to_string()
    if key in cache:
        return cache[key]
    names: dict[str, ua.QualifiedName] = {}
    current = type_id
    while current is not None and current != ua.NodeId(ua.ObjectIds.BaseObjectType):
        node = opc.client.get_node(current)
        for ref_type in (ua.ObjectIds.HasComponent, ua.ObjectIds.HasProperty):
            for ref in await node.get_references(ref_type, ua.BrowseDirection.Forward, includesubtypes=False):
                names.setdefault(ref.BrowseName.Name, ref.BrowseName)
        supers = await node.get_references(ua.ObjectIds.HasSubtype, ua.BrowseDirection.Inverse)
        current = supers[0].NodeId if supers else None
    cache[key] = names
    return names


async def mandatory_names(opc, type_id: ua.NodeId) -> set[str]:
    """Names of the children `type_id` and its supertypes declare Mandatory."""
    names: set[str] = set()
    current = type_id
    while current is not None and current != ua.NodeId(ua.ObjectIds.BaseObjectType):
        node = opc.client.get_node(current)
        for ref_type in (ua.ObjectIds.HasComponent, ua.ObjectIds.HasProperty):
            for ref in await node.get_references(ref_type, ua.BrowseDirection.Forward, includesubtypes=False):
                rules = await opc.client.get_node(ref.NodeId).get_references(
                    ua.ObjectIds.HasModellingRule, ua.BrowseDirection.Forward
                )
                if any(r.NodeId == ua.NodeId(ua.ObjectIds.ModellingRule_Mandatory) for r in rules):
                    names.add(ref.BrowseName.Name)
        supers = await node.get_references(ua.ObjectIds.HasSubtype, ua.BrowseDirection.Inverse)
        current = supers[0].NodeId if supers else None
    return names


async def test_node_ids_and_browse_names_follow_browse_paths(opc):
    """Instance NodeIds are ns=<instances>;s=<browse path>. A child that its parent's type
    declares has the declaration's browse name (the gateway's types namespace for a Fabrique
    type, DI's for the kiosk's nameplate), so a browse path resolved from the type finds it;
    any other in the instances namespace; standard properties (EngineeringUnits, EURange,
    method arguments) use ns=0 names."""
    tree = await browse_tree(opc)
    problems = []
    cache: dict = {}
    for node in tree.values():
        name = node.browse_name
        if name.Name in STANDARD_PROPERTY_NAMES:
            if name.NamespaceIndex != 0:
                problems.append(f"{node.path}: standard property browse name in ns={name.NamespaceIndex}")
            continue
        expected = ua.QualifiedName(name.Name, opc.inst)
        if node.parent is not None and tree[node.parent].node_class == ua.NodeClass.Object:
            parent_type = tree[node.parent].type_definition
            declared = await declared_names(opc, ua.NodeId(parent_type.Identifier, parent_type.NamespaceIndex), cache)
            expected = declared.get(name.Name, expected)
        if name != expected:
            problems.append(f"{node.path}: browse name {name.to_string()}, expected {expected.to_string()}")
        if not same_node(node.nodeid, opc.nodeid(node.path)):
            problems.append(f"{node.path}: NodeId {node.nodeid.to_string()}")
    assert not problems, "\n".join(problems[:50])


async def test_type_definitions(opc):
    tree = await browse_tree(opc)
    expected = {"Fabrique": "SiteType", "Fabrique/Line": "LineType", "Fabrique/Orders": "OrdersType"}
    expected["Fabrique/Indicators"] = "IndicatorsType"
    expected["Fabrique/Visits"] = "VisitsType"
    expected["Fabrique/Stop"] = "StopType"
    expected["Fabrique/Visits/Survey"] = "SurveyType"
    for n in range(1, 10):
        expected[f"Fabrique/Line/Steps/Step{n}"] = "ProductionStepType"
    for device in DEVICE_TAGS:
        expected[f"Fabrique/Stations/{device.split('/')[0]}"] = "StationType"
        expected[f"Fabrique/Stations/{device}"] = "DeviceType"
    for n in range(1, RECENT_SLOTS + 1):
        expected[slot_path(n)] = "OrderType"
    expected["Fabrique/Stations/Reception/Kiosk"] = "KioskType"
    paths = sorted(expected)
    missing = [p for p in paths if p not in tree]
    assert not missing, f"nodes missing: {missing}"
    got = await type_definitions(opc, [tree[p].nodeid for p in paths])
    problems = []
    for path, targets in zip(paths, got):
        want = opc.type_id(expected[path])
        if len(targets) != 1 or not same_node(targets[0], want):
            problems.append(
                f"{path}: HasTypeDefinition -> {[t.to_string() for t in targets]}, "
                f"expected {want.to_string()} ({expected[path]})"
            )
    # Properties are PropertyType, as OPC UA requires.
    props = [n for n in tree.values() if same_node(n.reference_type, HAS_PROPERTY)]
    assert props, "no properties found"
    for node, targets in zip(props, await type_definitions(opc, [n.nodeid for n in props])):
        if len(targets) != 1 or not same_node(targets[0], PROPERTY_TYPE):
            problems.append(f"{node.path}: property with type definition {[t.to_string() for t in targets]}")
    assert not problems, "\n".join(problems)


async def test_data_types(opc):
    expected = expected_data_types()
    paths = sorted(expected)
    dvs = await opc.read_many(paths, ua.AttributeIds.DataType)
    problems = []
    for path, dv in zip(paths, dvs):
        if not dv.StatusCode.is_good():
            problems.append(f"{path}: DataType read failed with {status_name(dv.StatusCode)}")
            continue
        got = dv.Value.Value
        want = ua.NodeId(expected[path], 0)
        if not same_node(got, want):
            problems.append(f"{path}: DataType {got.to_string()}, expected {DATA_TYPE_NAMES[expected[path]]}")
    assert not problems, "\n".join(problems)

    models = opc.node("Fabrique/Line/Models")
    assert await models.read_value_rank() == 1, "Line/Models should be a one-dimensional array"
    assert await opc.node("Fabrique/Line/State").read_value_rank() == -1


async def test_every_variable_declares_a_concrete_data_type(opc):
    tree = await browse_tree(opc)
    nodes = variables(tree)
    dvs = await opc.read_nodeids([n.nodeid for n in nodes], ua.AttributeIds.DataType)
    bad = []
    for node, dv in zip(nodes, dvs):
        dt = dv.Value.Value if dv.StatusCode.is_good() else None
        if dt is None or (dt.NamespaceIndex == 0 and dt.Identifier in (0, ua.ObjectIds.BaseDataType)):
            bad.append(f"{node.path}: {dt}")
    assert not bad, "variables without a concrete DataType:\n" + "\n".join(bad)


async def test_access_levels(opc):
    tree = await browse_tree(opc)
    for path in WRITABLE_TAGS:
        assert path in tree, f"writable tag {path} missing"
    nodes = variables(tree)
    nodeids = [n.nodeid for n in nodes]
    access = await opc.read_nodeids(nodeids, ua.AttributeIds.AccessLevel)
    user_access = await opc.read_nodeids(nodeids, ua.AttributeIds.UserAccessLevel)
    read, write = ua.AccessLevel.CurrentRead.mask, ua.AccessLevel.CurrentWrite.mask
    history = ua.AccessLevel.HistoryRead.mask
    problems = []
    for node, al, ual in zip(nodes, access, user_access):
        al_v, ual_v = al.Value.Value, ual.Value.Value
        # Tag variables are historized (HistoryRead bit); test_history.py checks that bit.
        al_v, ual_v = al_v & ~history, ual_v & ~history
        if node.path in WRITABLE_TAGS:
            if al_v != read | write:
                problems.append(f"{node.path}: AccessLevel {al_v}, expected CurrentRead|CurrentWrite (3)")
            if not (ual_v & read and ual_v & write):
                problems.append(f"{node.path}: UserAccessLevel {ual_v} does not allow reading and writing")
        else:
            if al_v != read:
                problems.append(f"{node.path}: AccessLevel {al_v}, expected CurrentRead only (1)")
            if ual_v & write or not ual_v & read:
                problems.append(f"{node.path}: UserAccessLevel {ual_v}, expected readable, not writable")
    assert not problems, "\n".join(problems)


def _find_property(tree, path: str, name: str):
    prop = tree.get(f"{path}/{name}")
    assert prop is not None, f"{path} has no {name} property; children: {sorted(child_names(tree, path))}"
    assert same_node(prop.reference_type, HAS_PROPERTY), f"{path}/{name} is not referenced by HasProperty"
    return prop


async def test_engineering_units_and_ranges(opc):
    tree = await browse_tree(opc)
    units = {
        "Fabrique/Stations/Printing/Printer3D/NozzleTemperature": ("°C", (0.0, 300.0)),
        "Fabrique/Stations/Logistics/ConveyorPlc/SpeedSetpoint": ("m/min", (0.0, 30.0)),
    }
    for path, (unit, (low, high)) in units.items():
        eu = _find_property(tree, path, "EngineeringUnits")
        eu_value = await opc.client.get_node(eu.nodeid).read_value()
        assert isinstance(eu_value, ua.EUInformation), f"{path}/EngineeringUnits is {type(eu_value)}"
        assert eu_value.DisplayName.Text == unit, f"{path} unit"
        assert same_node(await opc.client.get_node(eu.nodeid).read_data_type(), ua.NodeId(EUINFORMATION, 0))
        rng = _find_property(tree, path, "EURange")
        range_value = await opc.client.get_node(rng.nodeid).read_value()
        assert isinstance(range_value, ua.Range), f"{path}/EURange is {type(range_value)}"
        assert (range_value.Low, range_value.High) == (low, high), f"{path} EURange"
        assert same_node(await opc.client.get_node(rng.nodeid).read_data_type(), ua.NodeId(RANGE, 0))

    # Every writable tag is an analog Double with the range that writes are checked against.
    for path, (low, high) in WRITABLE_TAGS.items():
        assert same_node(await opc.node(path).read_data_type(), ua.NodeId(DOUBLE, 0)), path
        rng = _find_property(tree, path, "EURange")
        range_value = await opc.client.get_node(rng.nodeid).read_value()
        assert (range_value.Low, range_value.High) == (low, high), f"{path} EURange"
        _find_property(tree, path, "EngineeringUnits")


async def test_all_values_are_good_and_match_their_data_type(opc):
    tree = await browse_tree(opc)
    nodes = variables(tree)
    nodeids = [n.nodeid for n in nodes]
    last: dict[str, list[str]] = {}

    async def all_good():
        dvs = await opc.read_nodeids(nodeids, ua.AttributeIds.Value)
        last["bad"] = [
            f"{n.path}: {status_name(dv.StatusCode)}" for n, dv in zip(nodes, dvs) if not dv.StatusCode.is_good()
        ]
        last["dvs"] = dvs
        return not last["bad"]

    await wait_for(all_good, 20, interval=0.5, what=lambda: "all values Good; still bad:\n" + "\n".join(last["bad"][:40]))

    data_types = await opc.read_nodeids(nodeids, ua.AttributeIds.DataType)
    problems = []
    for node, dv, dt in zip(nodes, last["dvs"], data_types):
        dt_id = dt.Value.Value
        if dt_id.NamespaceIndex != 0 or dt_id.Identifier not in BUILTIN_VARIANT:
            continue
        variant = dv.Value
        if variant is None or variant.VariantType != BUILTIN_VARIANT[dt_id.Identifier]:
            problems.append(
                f"{node.path}: DataType {dt_id.to_string()} but value "
                f"{None if variant is None else variant.VariantType.name}"
            )
    assert not problems, "\n".join(problems)


async def test_static_values(opc):
    assert await opc.read("Fabrique/Line/Mode") == "Simulation"
    assert await opc.read("Fabrique/Line/State") == "Running"
    assert await opc.read("Fabrique/Line/Models") == DEFAULT_MODELS
    for n, name in enumerate(STEP_NAMES, start=1):
        step = f"Fabrique/Line/Steps/Step{n}"
        assert await opc.read(f"{step}/Number") == n
        assert await opc.read(f"{step}/Name") == name
        assert await opc.read(f"{step}/State") in ("Idle", "Busy", "Blocked")
    for n in range(1, RECENT_SLOTS + 1):
        assert await opc.read(f"{slot_path(n)}/State") in (
            "Empty", "Queued", "InProgress", "Delivered", "Scrapped"
        )
    for device in DEVICE_TAGS:
        for prop in DEVICE_PROPERTIES:
            assert isinstance(await opc.read(f"Fabrique/Stations/{device}/{prop}"), str)


async def test_browse_paths_from_the_types_find_the_instances_children(opc):
    """What a client that knows only Fabrique.NodeSet2.xml does: take a type's declared
    children (their browse names, in the types namespace) and resolve them from an instance
    with TranslateBrowsePathsToNodeIds, nested ones too (a device's Status/Connected)."""
    instances = {
        "Fabrique": "SiteType",
        "Fabrique/Line": "LineType",
        "Fabrique/Line/Steps/Step4": "ProductionStepType",
        "Fabrique/Orders/Recent/Order01": "OrderType",
        "Fabrique/Stop": "StopType",
        "Fabrique/Visits": "VisitsType",
        "Fabrique/Visits/Survey": "SurveyType",
        "Fabrique/Stations/Printing/Printer3D": "DeviceType",
        "Fabrique/Stations/Printing/Printer3D/Status": "DeviceStatusType",
        "Fabrique/Stations/Reception/Kiosk": "KioskType",
    }
    cache: dict = {}
    paths, wanted = [], []
    for instance, type_name in instances.items():
        type_id = ua.NodeId(TYPE_IDS[type_name], opc.types)
        declared = await declared_names(opc, type_id, cache)
        assert declared, f"{type_name} declares nothing"
        # The gateway's own declarations, and the companion types' mandatory ones (the
        # kiosk's DI nameplate); optional ones of DI are not instantiated.
        mandatory = await mandatory_names(opc, type_id)
        for qname in declared.values():
            if qname.NamespaceIndex != opc.types and qname.Name not in mandatory:
                continue
            path = ua.BrowsePath()
            path.StartingNode = opc.nodeid(instance)
            element = ua.RelativePathElement()
            element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
            element.IncludeSubtypes = True
            element.IsInverse = False
            element.TargetName = qname
            path.RelativePath = ua.RelativePath()
            path.RelativePath.Elements = [element]
            paths.append(path)
            wanted.append(f"{instance}/{qname.Name}")
    # Nested: Printer3D -> <types>:Status -> <types>:Connected.
    nested = ua.BrowsePath()
    nested.StartingNode = opc.nodeid("Fabrique/Stations/Printing/Printer3D")
    nested.RelativePath = ua.RelativePath()
    nested.RelativePath.Elements = []
    for name in ("Status", "Connected"):
        element = ua.RelativePathElement()
        element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        element.IncludeSubtypes = True
        element.IsInverse = False
        element.TargetName = ua.QualifiedName(name, opc.types)
        nested.RelativePath.Elements.append(element)
    paths.append(nested)
    wanted.append("Fabrique/Stations/Printing/Printer3D/Status/Connected")
    results = await opc.client.uaclient.translate_browsepaths_to_nodeids(paths)
    problems = []
    for path, result in zip(wanted, results):
        if not result.StatusCode.is_good() or not result.Targets:
            problems.append(f"{path}: {result.StatusCode.name}")
            continue
        target = result.Targets[0].TargetId
        if not same_node(ua.NodeId(target.Identifier, target.NamespaceIndex), opc.nodeid(path)):
            problems.append(f"{path}: resolved to {target.to_string()}")
    assert not problems, "\n".join(problems)
