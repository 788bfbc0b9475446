//! The standard address space: the companion specifications (DI, IA, Machinery, Machine Tools,
//! Robotics, generated into the `fabrique-companion` crate) served as published, and every
//! machine placed where they say, next to the gateway's own `Objects/Fabrique` model.
//!
//! - [`types`] reads type definitions across the core and the gateway's address spaces;
//! - [`instances`] makes conformant instances of them;
//! - [`machines`] places each machine (`Objects/Machines`, DI `DeviceSet`);
//! - [`live`] drives the state machines and flags from the bus;
//! - [`conformance`] checks every instance against its TypeDefinition.

pub mod conformance;
pub mod instances;
pub mod live;
pub mod machines;
pub mod types;

use fabrique_adapters::TagCatalog;
use fabrique_companion::uri;
use opcua::server::address_space::AddressSpace;

pub use machines::{Bindings, MachineDecl, Namespaces};

/// Import the companion NodeSets into `space` (before the gateway's types, which extend them).
pub fn import_companions(space: &mut AddressSpace, namespaces: &mut opcua::nodes::NamespaceMap) {
    for import in fabrique_companion::imports() {
        space.import_node_set(&*import, namespaces);
    }
}

/// The namespace indexes of the structure, from `space`'s namespaces.
pub fn namespaces(space: &AddressSpace, instances: u16, types: u16) -> Option<Namespaces> {
    Some(Namespaces {
        instances,
        types,
        di: space.namespace_index(uri::DI)?,
        machinery: space.namespace_index(uri::MACHINERY)?,
        robotics: space.namespace_index(uri::ROBOTICS)?,
        machine_tool: space.namespace_index(uri::MACHINE_TOOL)?,
    })
}

/// Build the machines into `space`. `core` holds namespace 0 (the core node manager's space).
pub fn build(
    core: &AddressSpace,
    space: &mut AddressSpace,
    ns: Namespaces,
    machines: &[MachineDecl],
    catalog: &TagCatalog,
) -> Bindings {
    let mut out = instances::Instances::new(ns.instances);
    let bindings = {
        let types = types::Types::new(vec![core, &*space]);
        machines::plan(&types, ns, machines, catalog, &mut out)
    };
    let count = out.apply(space);
    tracing::debug!(
        nodes = count,
        machines = machines.len(),
        "standard address space built"
    );
    bindings
}

/// Remove the machine `name` from the standard structure (a reload removed or changed its
/// device): every node whose NodeId is `Machines/<name>` or below, with the references to them
/// (from `Machines`, `DeviceSet` and the steps). The device's tags are the gateway's, not
/// removed here. Returns how many nodes went.
pub fn remove_machine(
    space: &mut AddressSpace,
    type_tree: &dyn opcua::nodes::TypeTree,
    ns: Namespaces,
    name: &str,
) -> usize {
    use opcua::types::{BrowseDirection, Identifier, NodeId, ReferenceTypeId};
    let root = format!("Machines/{name}");
    let prefix = format!("{root}/");
    let below = |id: &NodeId| {
        id.namespace == ns.instances
            && matches!(&id.identifier, Identifier::String(s)
                if s.as_ref() == root || s.as_ref().starts_with(&prefix))
    };
    let mut doomed = Vec::new();
    let mut stack = vec![NodeId::new(ns.instances, root.as_str())];
    while let Some(node) = stack.pop() {
        if !space.node_exists(&node) || doomed.contains(&node) {
            continue;
        }
        stack.extend(
            space
                .find_references(
                    &node,
                    Some((ReferenceTypeId::HierarchicalReferences, true)),
                    type_tree,
                    BrowseDirection::Forward,
                )
                .map(|r| r.target_node.clone())
                .filter(|child| below(child)),
        );
        doomed.push(node);
    }
    for node in &doomed {
        space.delete(node, true);
    }
    doomed.len()
}

/// Check every instance under `Objects/Machines` and DI's `DeviceSet` against its
/// TypeDefinition (see [`conformance`]). `core` holds namespace 0.
/// Check the standard structure (`Machines`, `DeviceSet`) and, with `own_tree`, the gateway's
/// own `Objects/Fabrique` against its own types too: every tag variable is walked then, so the
/// server leaves that to `check` and the tests rather than pay it at every start.
pub fn check(
    core: &AddressSpace,
    space: &AddressSpace,
    ns: Namespaces,
    own_tree: bool,
) -> Vec<conformance::Violation> {
    use opcua::types::NodeId;
    let served = core
        .namespaces()
        .keys()
        .chain(space.namespaces().keys())
        .copied()
        .collect();
    let scope = conformance::Scope { served };
    let mut roots = vec![
        (
            "Machines".to_owned(),
            NodeId::new(ns.machinery, fabrique_companion::ids::machinery::MACHINES),
        ),
        (
            "DeviceSet".to_owned(),
            NodeId::new(ns.di, fabrique_companion::ids::di::DEVICE_SET),
        ),
    ];
    if own_tree {
        // The gateway's own tree against its own types (nodesets/Fabrique.NodeSet2.xml).
        roots.push((
            super::address_space::ROOT.to_owned(),
            super::address_space::instance_node_id(ns.instances, ""),
        ));
    }
    conformance::check(&types::Types::new(vec![core, space]), &roots, &scope)
}

/// The address spaces a server started with `config` would build (the core namespace, and the
/// gateway's with the companions, its types and every instance), without starting one: for
/// `fabrique-gateway check` and the tests.
pub struct DryRun {
    pub core: AddressSpace,
    pub space: AddressSpace,
    pub ns: Namespaces,
    /// Devices placed in the standard structure.
    pub machines: usize,
}

impl DryRun {
    pub fn new(
        config: &crate::config::GatewayConfig,
        catalog: &TagCatalog,
    ) -> Result<Self, String> {
        use super::address_space::{INSTANCES_NAMESPACE, TYPES_NAMESPACE};
        // The step trades are part of the model: load the catalogue as the server would.
        let journey = crate::journey::Journey::new(&config.journey, &config.line, &config.storage)
            .map_err(|e| e.to_string())?;
        let model = crate::gateway::static_model(config, &journey);
        let mut map = opcua::nodes::NamespaceMap::new();
        let mut core = AddressSpace::new();
        core.import_node_set(&opcua::server::address_space::CoreNamespace, &mut map);
        let mut space = AddressSpace::new();
        import_companions(&mut space, &mut map);
        let types =
            opcua::nodes::NodeSet2Import::new_str("en", crate::gateway::TYPES_NODESET, Vec::new())
                .map_err(|e| format!("nodesets/Fabrique.NodeSet2.xml: {e}"))?;
        space.import_node_set(&types, &mut map);
        let types_ns = map.add_namespace(TYPES_NAMESPACE);
        let ns = map.add_namespace(INSTANCES_NAMESPACE);
        space.add_namespace(TYPES_NAMESPACE, types_ns);
        space.add_namespace(INSTANCES_NAMESPACE, ns);
        super::address_space::build(&mut space, ns, types_ns, &model, catalog, true);
        let namespaces =
            namespaces(&space, ns, types_ns).ok_or("the companion namespaces are missing")?;
        build(&core, &mut space, namespaces, &model.machines, catalog);
        Ok(DryRun {
            core,
            space,
            ns: namespaces,
            machines: model
                .machines
                .iter()
                .filter(|m| m.shape.kind.is_some())
                .count(),
        })
    }

    pub fn check(&self) -> Vec<conformance::Violation> {
        check(&self.core, &self.space, self.ns, true)
    }
}

/// `fabrique-gateway check`: build the standard structure of `config` and check it.
pub fn check_config(
    config: &crate::config::GatewayConfig,
    catalog: &TagCatalog,
) -> std::process::ExitCode {
    match DryRun::new(config, catalog) {
        Ok(dry) => {
            let violations = dry.check();
            for v in &violations {
                eprintln!("error: standard address space: {v}");
            }
            if violations.is_empty() {
                println!(
                    "standard address space OK: {} machines and devices conform to their companion types, Objects/Fabrique to the gateway's types",
                    dry.machines
                );
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("error: standard address space: {error}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use opcua::types::{BrowseDirection, NodeId, ReferenceTypeId};

    use super::conformance::Violation;
    use super::*;
    use crate::config::GatewayConfig;

    fn build_for(config_file: Option<&str>) -> DryRun {
        let file = config_file.map(|f| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(f));
        let config = GatewayConfig::load_with_env(file.as_deref(), Vec::new()).unwrap();
        let plan = crate::gateway::plan(&config).unwrap();
        DryRun::new(&config, &plan.catalog).unwrap()
    }

    fn violations(b: &DryRun) -> Vec<Violation> {
        b.check()
    }

    fn children(b: &DryRun, node: &NodeId, reference_type: ReferenceTypeId) -> Vec<String> {
        let types = types::Types::new(vec![&b.core, &b.space]);
        let mut names: Vec<String> = types
            .targets(node, reference_type, BrowseDirection::Forward)
            .iter()
            .filter_map(|n| types.find(n))
            .map(|n| n.as_node().browse_name().name.to_string())
            .collect();
        names.sort();
        names
    }

    fn show(v: &[Violation]) -> String {
        v.iter().map(|v| format!("\n  {v}")).collect()
    }

    #[test]
    fn the_truck_conforms_to_its_types() {
        let b = build_for(None);
        let v = violations(&b);
        assert!(v.is_empty(), "{} violations:{}", v.len(), show(&v));
        let machines = NodeId::new(b.ns.machinery, fabrique_companion::ids::machinery::MACHINES);
        assert_eq!(
            children(&b, &machines, ReferenceTypeId::Organizes),
            [
                "Cmm",
                "CncMill",
                "Cobot",
                "ConveyorPlc",
                "LaserEngraver",
                "PackagingUnit",
                "Printer3D"
            ]
        );
        // The mill's spindle override: 100 %, the simulated mill has no spindle override knob.
        let spindle_override = NodeId::new(
            b.ns.instances,
            "Machines/CncMill/Monitoring/Spindle/Override",
        );
        let Some(opcua::nodes::NodeType::Variable(v)) = b.space.find(&spindle_override) else {
            panic!("no spindle Override");
        };
        let value = v.value(
            opcua::types::TimestampsToReturn::Neither,
            &opcua::types::NumericRange::None,
            &opcua::types::DataEncoding::Binary,
            0.0,
        );
        assert_eq!(value.value, Some(opcua::types::Variant::Double(100.0)));
        // The mill's Notification: Messages (an event notifier) and a part-unload prognosis.
        let notification = NodeId::new(b.ns.instances, "Machines/CncMill/Notification");
        assert_eq!(
            children(&b, &notification, ReferenceTypeId::HasComponent),
            ["Messages", "Prognoses"]
        );
        let Some(opcua::nodes::NodeType::Object(messages)) = b.space.find(&NodeId::new(
            b.ns.instances,
            "Machines/CncMill/Notification/Messages",
        )) else {
            panic!("no Messages");
        };
        assert!(messages
            .event_notifier()
            .contains(opcua::nodes::EventNotifier::SUBSCRIBE_TO_EVENTS));
        let prognoses = NodeId::new(b.ns.instances, "Machines/CncMill/Notification/Prognoses");
        assert_eq!(
            children(&b, &prognoses, ReferenceTypeId::HasComponent),
            ["PartUnload"]
        );
        let unload = NodeId::new(
            b.ns.instances,
            "Machines/CncMill/Notification/Prognoses/PartUnload",
        );
        let mut properties = children(&b, &unload, ReferenceTypeId::HasProperty);
        properties.extend(children(&b, &unload, ReferenceTypeId::HasComponent));
        for name in ["PredictedTime", "Location", "PartName", "PartIdentifier"] {
            assert!(properties.iter().any(|p| p == name), "{properties:?}");
        }
        let axes = NodeId::new(b.ns.instances, "Machines/Cobot/MotionDevices/Arm/Axes");
        assert_eq!(
            children(&b, &axes, ReferenceTypeId::HasComponent),
            ["Axis1", "Axis2", "Axis3", "Axis4", "Axis5", "Axis6"]
        );
    }

    #[test]
    fn partner_machines_conform_to_their_types() {
        let b = build_for(Some("config/examples/partner-machines.toml"));
        let v = violations(&b);
        assert!(v.is_empty(), "{} violations:{}", v.len(), show(&v));
        let machines = NodeId::new(b.ns.machinery, fabrique_companion::ids::machinery::MACHINES);
        let found = children(&b, &machines, ReferenceTypeId::Organizes);
        assert!(found.contains(&"press".to_owned()) && found.contains(&"arm".to_owned()));
        let device_set = NodeId::new(b.ns.di, fabrique_companion::ids::di::DEVICE_SET);
        let found = children(&b, &device_set, ReferenceTypeId::HasComponent);
        assert!(found.contains(&"sensor".to_owned()), "{found:?}");
        assert!(found.contains(&"arm".to_owned()), "{found:?}");
    }

    #[test]
    fn the_fabrique_tree_is_typed_as_its_adapters_declared_it() {
        use fabrique_adapters::FabriqueType;
        let b = build_for(None);
        let types = types::Types::new(vec![&b.core, &b.space]);
        let node = |path: &str| NodeId::new(b.ns.instances, format!("Fabrique/{path}"));
        let type_of = |path: &str| types.type_definition(&node(path));
        let own = |t: FabriqueType| Some(NodeId::new(b.ns.types, t.id()));
        let folder = Some(opcua::types::ObjectTypeId::FolderType.into());
        let base = Some(opcua::types::ObjectTypeId::BaseObjectType.into());
        assert_eq!(type_of("Line"), own(FabriqueType::Line));
        assert_eq!(type_of("Line/Steps"), folder);
        assert_eq!(
            type_of("Line/Steps/Step4"),
            own(FabriqueType::ProductionStep)
        );
        assert_eq!(type_of("Orders/Recent/Order01"), own(FabriqueType::Order));
        assert_eq!(type_of("Stations/Printing"), own(FabriqueType::Station));
        assert_eq!(
            type_of("Stations/Printing/Printer3D"),
            own(FabriqueType::Device)
        );
        assert_eq!(
            type_of("Stations/Printing/Printer3D/Status"),
            own(FabriqueType::DeviceStatus)
        );
        assert_eq!(
            type_of("Stations/Reception/Kiosk"),
            own(FabriqueType::Kiosk)
        );
        // The kiosk, a DI DeviceType: DI's nameplate, in DI's namespace, from the type.
        for name in [
            "Manufacturer",
            "SerialNumber",
            "RevisionCounter",
            "DeviceManual",
        ] {
            let Some(found) = types.find(&node(&format!("Stations/Reception/Kiosk/{name}"))) else {
                panic!("the kiosk has no {name}");
            };
            assert_eq!(found.as_node().browse_name().namespace_index, b.ns.di);
        }
        assert_eq!(type_of("Visits/Survey"), own(FabriqueType::Survey));
        // Nobody declares the indicators' groups: plain objects.
        assert_eq!(type_of("Indicators/InProgress"), base);
        // A folder organises its children; a typed object has them as components.
        let recent = children(&b, &node("Orders/Recent"), ReferenceTypeId::Organizes);
        assert_eq!(recent.len(), 20);
        let line = children(&b, &node("Line"), ReferenceTypeId::HasComponent);
        for method in ["SubmitOrder", "Start", "Stop", "Steps"] {
            assert!(line.iter().any(|c| c == method), "{line:?}");
        }
        // Methods carry the arguments their adapter declared, with their types.
        let inputs = node("Visits/CheckIn/InputArguments");
        let Some(opcua::nodes::NodeType::Variable(inputs)) = types.find(&inputs) else {
            panic!("no CheckIn/InputArguments");
        };
        let value = inputs.value(
            opcua::types::TimestampsToReturn::Neither,
            &opcua::types::NumericRange::None,
            &opcua::types::DataEncoding::Binary,
            0.0,
        );
        let Some(opcua::types::Variant::Array(array)) = value.value else {
            panic!("InputArguments is not an array");
        };
        let arguments: Vec<(String, NodeId)> = array
            .values
            .iter()
            .filter_map(|v| match v {
                opcua::types::Variant::ExtensionObject(o) => {
                    let a = o.inner_as::<opcua::types::Argument>()?;
                    Some((a.name.to_string(), a.data_type.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            arguments,
            [
                (
                    "Audience".to_owned(),
                    opcua::types::DataTypeId::String.into()
                ),
                ("Size".to_owned(), opcua::types::DataTypeId::UInt32.into()),
            ]
        );
    }

    #[test]
    fn a_missing_mandatory_child_of_the_fabrique_tree_is_a_violation() {
        let mut b = build_for(None);
        let state = NodeId::new(b.ns.instances, "Fabrique/Line/Steps/Step4/State");
        assert!(b.space.delete(&state, true).is_some());
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{}", show(&v));
        assert_eq!(v[0].path, "Fabrique/Line/Steps/Step4");
        assert!(v[0].problem.contains("mandatory Variable"), "{}", v[0]);
        assert!(v[0].problem.contains("State"), "{}", v[0]);
    }

    #[test]
    fn a_missing_mandatory_child_is_a_violation() {
        let mut b = build_for(None);
        let serial = NodeId::new(
            b.ns.instances,
            "Machines/CncMill/Identification/SerialNumber",
        );
        assert!(b.space.delete(&serial, true).is_some());
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{}", show(&v));
        assert_eq!(v[0].path, "Machines/CncMill/Identification");
        assert!(v[0].problem.contains("mandatory Variable"), "{}", v[0]);
        assert!(v[0].problem.contains("SerialNumber"), "{}", v[0]);
    }

    #[test]
    fn a_prognosis_without_its_mandatory_part_name_is_a_violation() {
        let mut b = build_for(None);
        let unload = "Machines/CncMill/Notification/Prognoses/PartUnload";
        let name = NodeId::new(b.ns.instances, format!("{unload}/PartName"));
        assert!(b.space.delete(&name, true).is_some());
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{}", show(&v));
        assert_eq!(v[0].path, unload);
        assert!(v[0].problem.contains("PartName"), "{}", v[0]);
    }

    /// The adapters' table of what each Fabrique type declares (which decides the namespace of
    /// an instance child's BrowseName) is the NodeSet's, nothing more, nothing less.
    #[test]
    fn the_declared_children_are_those_of_the_nodeset() {
        use fabrique_adapters::FabriqueType;
        let b = build_for(None);
        let types = types::Types::new(vec![&b.core, &b.space]);
        for t in FabriqueType::ALL {
            let type_id = NodeId::new(b.ns.types, t.id());
            let mut declared: Vec<String> =
                [ReferenceTypeId::HasComponent, ReferenceTypeId::HasProperty]
                    .into_iter()
                    .flat_map(|r| types.targets(&type_id, r, BrowseDirection::Forward))
                    .filter_map(|n| types.find(&n))
                    .map(|n| n.as_node().browse_name().clone())
                    .filter(|name| name.namespace_index == b.ns.types)
                    .map(|name| name.name.to_string())
                    .collect();
            declared.sort();
            let mut table: Vec<String> = t
                .declared_children()
                .iter()
                .map(|s| s.to_string())
                .collect();
            table.sort();
            assert_eq!(table, declared, "{}", t.browse_name());
        }
    }

    #[test]
    fn a_declared_child_in_the_instances_namespace_is_a_violation() {
        let mut b = build_for(None);
        let state = NodeId::new(b.ns.instances, "Fabrique/Line/Steps/Step4/State");
        // The same variable, named in the instances namespace (as before the types' names).
        assert!(b.space.delete(&state, true).is_some());
        let step = NodeId::new(b.ns.instances, "Fabrique/Line/Steps/Step4");
        opcua::nodes::VariableBuilder::new(
            &state,
            opcua::types::QualifiedName::new(b.ns.instances, "State"),
            "State",
        )
        .data_type(opcua::types::DataTypeId::String)
        .value_rank(-1)
        .has_type_definition(opcua::types::VariableTypeId::BaseDataVariableType)
        .component_of(step)
        .insert(&mut b.space);
        let v = violations(&b);
        assert_eq!(v.len(), 1, "{}", show(&v));
        assert_eq!(v[0].path, "Fabrique/Line/Steps/Step4");
        assert!(v[0].problem.contains("another namespace"), "{}", v[0]);
    }
}
