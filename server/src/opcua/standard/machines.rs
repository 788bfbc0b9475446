//! Every machine where the companion specifications put it: `Objects/Machines` (Machinery),
//! DI's `DeviceSet`, typed by Machinery, Machine Tools or Robotics, with the values the bus
//! provides (see the README, "Companion specifications").

use fabrique_adapters::device::{Identification, StandardKind, StandardShape};
use fabrique_adapters::line::{step_path, step_tag};
use fabrique_adapters::{FabriqueType, TagCatalog, TagId};
use fabrique_companion::ids;
use opcua::nodes::NodeBase;
use opcua::types::{
    BrowseDirection, ExtensionObject, LocalizedText, NodeId, ObjectTypeId, QualifiedName,
    ReferenceTypeId, Variant,
};

use super::instances::Instances;
use super::live::{Derived, StateRule};
use super::types::Types;
use crate::opcua::address_space::instance_node_id;
use crate::opcua::convert::engineering_units;

/// A device that declared (or, simulated, implies) a place in the standard structure.
#[derive(Debug, Clone)]
pub struct MachineDecl {
    pub name: String,
    /// `Stations/<station>/<device>`, where its tags are.
    pub device_path: String,
    pub identification: Identification,
    pub shape: StandardShape,
}

impl MachineDecl {
    /// The machine a configured device is (or is not: see `shape.kind`).
    pub fn of(device: &fabrique_adapters::registry::DeviceConfig) -> Self {
        MachineDecl {
            name: device.name().to_owned(),
            device_path: fabrique_adapters::device::device_path(device.station(), device.name()),
            identification: device.identification().clone(),
            shape: device.standard(),
        }
    }
}

/// Namespace indexes the structure refers to.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces {
    pub instances: u16,
    pub types: u16,
    pub di: u16,
    pub machinery: u16,
    pub robotics: u16,
    pub machine_tool: u16,
}

/// Fabrique types (nodesets/Fabrique.NodeSet2.xml).
const MACHINE_TYPE: u32 = FabriqueType::Machine.id();
const FIELD_DEVICE_TYPE: u32 = FabriqueType::FieldDevice.id();
const PERFORMED_BY: u32 = 4001;

/// What the node manager needs besides the nodes.
#[derive(Default)]
pub struct Bindings {
    /// Standard variables that show a tag's value (reads and subscriptions, like the tag's own).
    pub aliases: Vec<(NodeId, TagId)>,
    /// Standard variables computed from tags (state machines, flags).
    pub derived: Vec<Derived>,
}

/// Plans the standard structure of `machines` into `out`.
pub fn plan(
    types: &Types<'_>,
    ns: Namespaces,
    machines: &[MachineDecl],
    catalog: &TagCatalog,
    out: &mut Instances,
) -> Bindings {
    let mut plan = Planner {
        types,
        ns,
        catalog,
        out,
        bindings: Bindings::default(),
    };
    for machine in machines {
        if let Some(kind) = machine.shape.kind {
            plan.machine(machine, kind);
        }
    }
    plan.kiosks();
    plan.bindings
}

/// The kiosk's nameplate: it is the gateway's own function, made by this project.
fn kiosk_identification() -> Identification {
    Identification {
        manufacturer: "Fabrique Gateway".into(),
        model: "Reception kiosk".into(),
        serial: "kiosk".into(),
        software_revision: env!("CARGO_PKG_VERSION").into(),
        ..Identification::default()
    }
}

struct Planner<'p, 't> {
    types: &'p Types<'t>,
    ns: Namespaces,
    catalog: &'p TagCatalog,
    out: &'p mut Instances,
    bindings: Bindings,
}

impl Planner<'_, '_> {
    fn tag(&self, machine: &MachineDecl, name: &str) -> Option<TagId> {
        self.catalog
            .lookup(&format!("{}/{name}", machine.device_path))
    }

    /// The order tags of the line steps the machine performs: it is busy while one is set.
    fn orders_at_steps(&self, machine: &MachineDecl) -> Vec<TagId> {
        let steps = machine.shape.steps.iter();
        steps
            .filter_map(|&n| step_tag(self.catalog, n.into(), "CurrentOrder"))
            .collect()
    }

    /// The first of `names` the device has.
    fn any_tag(&self, machine: &MachineDecl, names: &[&str]) -> Option<TagId> {
        names.iter().find_map(|n| self.tag(machine, n))
    }

    fn bind(&mut self, path: &str, tag: Option<TagId>) {
        if let (Some(node), Some(tag)) = (self.out.get(path), tag) {
            self.bindings.aliases.push((node.clone(), tag));
        }
    }

    fn optional(&mut self, path: &str, name: &str) -> Option<NodeId> {
        self.out.optional(self.types, path, name)
    }

    fn machine(&mut self, machine: &MachineDecl, kind: StandardKind) {
        let ns = self.ns;
        let root = format!("Machines/{}", machine.name);
        let machines = NodeId::new(ns.machinery, ids::machinery::MACHINES);
        let device_set = NodeId::new(ns.di, ids::di::DEVICE_SET);
        let (type_id, parent, reference): (NodeId, &NodeId, NodeId) = match kind {
            StandardKind::Machine => (
                NodeId::new(ns.types, MACHINE_TYPE),
                &machines,
                ReferenceTypeId::Organizes.into(),
            ),
            StandardKind::MachineTool => (
                NodeId::new(ns.machine_tool, ids::machine_tool::MACHINE_TOOL_TYPE),
                &machines,
                ReferenceTypeId::Organizes.into(),
            ),
            StandardKind::Robot => (
                NodeId::new(ns.robotics, ids::robotics::MOTION_DEVICE_SYSTEM_TYPE),
                &device_set,
                ReferenceTypeId::HasComponent.into(),
            ),
            StandardKind::Device => (
                NodeId::new(ns.types, FIELD_DEVICE_TYPE),
                &device_set,
                ReferenceTypeId::HasComponent.into(),
            ),
        };
        let description = format!(
            "{} {} at {} (its gateway tags are under Objects/Fabrique/{})",
            machine.identification.manufacturer,
            machine.identification.model,
            machine.device_path,
            machine.device_path
        );
        let id = self.out.object(
            self.types,
            &root,
            QualifiedName::new(ns.instances, machine.name.as_str()),
            Some(&description),
            &type_id,
            parent,
            reference,
        );
        if kind == StandardKind::Robot {
            self.out
                .reference(&machines, &id, ReferenceTypeId::Organizes);
        }
        for step in &machine.shape.steps {
            let step = instance_node_id(ns.instances, &step_path((*step).into()));
            self.out
                .reference(&step, &id, NodeId::new(ns.types, PERFORMED_BY));
        }
        // The device's own tags, as components of the machine too (same nodes, same NodeIds).
        let prefix = format!("{}/", machine.device_path);
        for (_, entry) in self.catalog.iter() {
            let Some(rest) = entry.spec.path.strip_prefix(&prefix) else {
                continue;
            };
            if !rest.contains('/') {
                let tag = instance_node_id(ns.instances, &entry.spec.path);
                self.out.reference(&id, &tag, ReferenceTypeId::HasComponent);
            }
        }
        match kind {
            StandardKind::Device => self.device_nameplate(&root, &machine.identification),
            _ => {
                self.identification(machine, &root, &id);
                self.building_blocks(machine, &root, &id);
            }
        }
        match kind {
            StandardKind::MachineTool => self.machine_tool(machine, &root),
            StandardKind::Robot => self.robot(machine, &root),
            _ => {}
        }
    }

    /// Objects of the gateway's tree typed `KioskType` (a DI `DeviceType`) get DI's
    /// mandatory nameplate, once (a reload plans again: what exists stays).
    fn kiosks(&mut self) {
        let type_id = NodeId::new(self.ns.types, FabriqueType::Kiosk.id());
        let kiosk = fabrique_adapters::ObjectType::Fabrique(FabriqueType::Kiosk);
        let paths: Vec<String> = self
            .catalog
            .objects()
            .filter(|o| o.object_type == kiosk)
            .map(|o| o.path)
            .collect();
        for path in paths {
            let id = instance_node_id(self.ns.instances, &path);
            let root = match &id.identifier {
                opcua::types::Identifier::String(s) => s.to_string(),
                _ => continue,
            };
            let done = NodeId::new(self.ns.instances, format!("{root}/SerialNumber"));
            if self.types.find(&id).is_none() || self.types.find(&done).is_some() {
                continue;
            }
            self.out
                .adopt(self.types, &root, id, &type_id, self.ns.types);
            self.device_nameplate(&root, &kiosk_identification());
        }
    }

    /// DI DeviceType's mandatory nameplate.
    fn device_nameplate(&mut self, root: &str, id: &Identification) {
        let text = |s: &str| LocalizedText::new("", s);
        self.out
            .set(&format!("{root}/Manufacturer"), text(&id.manufacturer));
        self.out.set(&format!("{root}/Model"), text(&id.model));
        self.out
            .set(&format!("{root}/SerialNumber"), id.serial.as_str());
        self.out.set(
            &format!("{root}/SoftwareRevision"),
            id.software_revision.as_str(),
        );
        for name in ["HardwareRevision", "DeviceRevision", "DeviceManual"] {
            self.out.set(&format!("{root}/{name}"), "");
        }
        self.out.set(&format!("{root}/RevisionCounter"), -1i32);
    }

    /// `Identification` (HasAddIn, MachineIdentificationType or the type's own subtype).
    fn identification(&mut self, machine: &MachineDecl, root: &str, id: &NodeId) {
        let path = format!("{root}/Identification");
        if self.out.get(&path).is_none() {
            self.out.object(
                self.types,
                &path,
                QualifiedName::new(self.ns.di, "Identification"),
                Some("Machinery's machine identification"),
                &NodeId::new(
                    self.ns.machinery,
                    ids::machinery::MACHINE_IDENTIFICATION_TYPE,
                ),
                id,
                ReferenceTypeId::HasAddIn,
            );
        }
        let ident = &machine.identification;
        let text = |s: &str| LocalizedText::new("", s);
        for name in [
            "Model",
            "ProductCode",
            "SoftwareRevision",
            "YearOfConstruction",
            "Location",
        ] {
            self.optional(&path, name);
        }
        self.out
            .set(&format!("{path}/Manufacturer"), text(&ident.manufacturer));
        self.out
            .set(&format!("{path}/SerialNumber"), ident.serial.as_str());
        self.out.set(
            &format!("{path}/ProductInstanceUri"),
            ident.product_instance_uri().as_str(),
        );
        self.out.set(&format!("{path}/Model"), text(&ident.model));
        self.out
            .set(&format!("{path}/ProductCode"), ident.product_code.as_str());
        self.out.set(
            &format!("{path}/SoftwareRevision"),
            ident.software_revision.as_str(),
        );
        match ident.year_of_construction {
            Some(year) => self.out.set(&format!("{path}/YearOfConstruction"), year),
            None => self
                .out
                .set(&format!("{path}/YearOfConstruction"), Variant::Empty),
        }
        // Where the truck stands: the current stop's town, from the bus.
        let town = self.catalog.lookup("Stop/Town");
        self.bind(&format!("{path}/Location"), town);
    }

    /// `MachineryBuildingBlocks` with the identification and both state machines.
    fn building_blocks(&mut self, machine: &MachineDecl, root: &str, id: &NodeId) {
        let m = self.ns.machinery;
        let blocks_path = format!("{root}/MachineryBuildingBlocks");
        let blocks = self.out.object(
            self.types,
            &blocks_path,
            QualifiedName::new(m, "MachineryBuildingBlocks"),
            None,
            &ObjectTypeId::FolderType.into(),
            id,
            ReferenceTypeId::HasComponent,
        );
        if let Some(identification) = self.out.get(&format!("{root}/Identification")).cloned() {
            self.out
                .reference(&blocks, &identification, ReferenceTypeId::HasAddIn);
        }
        let connected = self.tag(machine, "Status/Connected");
        let busy = self.orders_at_steps(machine);
        let line_state = self.catalog.lookup("Line/State");
        for (name, type_number, rule) in [
            (
                "MachineryItemState",
                ids::machinery::MACHINERY_ITEM_STATE_TYPE,
                StateRule::ItemState {
                    connected,
                    busy: busy.clone(),
                    out_of_service: machine.shape.out_of_service,
                },
            ),
            (
                "MachineryOperationMode",
                ids::machinery::MACHINERY_OPERATION_MODE_TYPE,
                StateRule::OperationMode { line_state },
            ),
        ] {
            let path = format!("{blocks_path}/{name}");
            let type_id = NodeId::new(m, type_number);
            self.out.object(
                self.types,
                &path,
                QualifiedName::new(m, name),
                None,
                &type_id,
                &blocks,
                ReferenceTypeId::HasAddIn,
            );
            self.state_machine(&path, &type_id, rule);
        }
    }

    /// A finite state machine at `path` whose current state `rule` computes.
    fn state_machine(&mut self, path: &str, type_id: &NodeId, rule: StateRule) {
        let states = self.states_of(type_id);
        let current = self.out.get(&format!("{path}/CurrentState")).cloned();
        let id = self.out.get(&format!("{path}/CurrentState/Id")).cloned();
        let number = self
            .out
            .get(&format!("{path}/CurrentState/Number"))
            .cloned();
        if let (Some(current), Some(id)) = (current, id) {
            self.bindings.derived.push(Derived::State {
                current,
                id,
                number,
                states,
                rule,
            });
        }
    }

    /// The states (StateType objects) a state machine type and its supertypes declare:
    /// browse name, NodeId and StateNumber.
    fn states_of(&self, type_id: &NodeId) -> Vec<(String, NodeId, u32)> {
        let mut states = Vec::new();
        for ty in self.types.chain(type_id) {
            for node in
                self.types
                    .targets(&ty, ReferenceTypeId::HasComponent, BrowseDirection::Forward)
            {
                let Some(found) = self.types.find(&node) else {
                    continue;
                };
                let is_state = self.types.type_definition(&node).is_some_and(|t| {
                    self.types
                        .is_subtype_of(&t, &ObjectTypeId::StateType.into())
                });
                if !is_state {
                    continue;
                }
                let number = self
                    .types
                    .targets(
                        &node,
                        ReferenceTypeId::HasProperty,
                        BrowseDirection::Forward,
                    )
                    .into_iter()
                    .filter_map(|p| match self.types.find(&p) {
                        Some(opcua::nodes::NodeType::Variable(v))
                            if v.browse_name().name.as_ref() == "StateNumber" =>
                        {
                            match v
                                .value(
                                    opcua::types::TimestampsToReturn::Neither,
                                    &opcua::types::NumericRange::None,
                                    &opcua::types::DataEncoding::Binary,
                                    0.0,
                                )
                                .value
                            {
                                Some(Variant::UInt32(n)) => Some(n),
                                _ => None,
                            }
                        }
                        _ => None,
                    })
                    .next()
                    .unwrap_or(0);
                states.push((found.as_node().browse_name().name.to_string(), node, number));
            }
        }
        states
    }

    /// Machine Tools: the spindle and the active program from the bus.
    fn machine_tool(&mut self, machine: &MachineDecl, root: &str) {
        let mt = self.ns.machine_tool;
        let line_state = self.catalog.lookup("Line/State");
        let mode = format!("{root}/Monitoring/MachineTool/OperationMode");
        if let Some(node) = self.out.get(&mode).cloned() {
            self.bindings
                .derived
                .push(Derived::OperationMode { node, line_state });
        }
        // The spindle, for a machine that has one.
        if let Some(speed) = self.tag(machine, "SpindleSpeed") {
            let monitoring = self.out.get(&format!("{root}/Monitoring")).cloned();
            if let Some(monitoring) = monitoring {
                let path = format!("{root}/Monitoring/Spindle");
                let spindle = self.out.object(
                    self.types,
                    &path,
                    QualifiedName::new(mt, "Spindle"),
                    Some("The main spindle; its speed is the gateway's SpindleSpeed tag"),
                    &NodeId::new(mt, 22),
                    &monitoring,
                    ReferenceTypeId::HasComponent,
                );
                self.out.set(&format!("{path}/Name"), "Spindle");
                if let Some(node) = self.out.get(&format!("{path}/IsRotating")).cloned() {
                    self.bindings.derived.push(Derived::Above {
                        node,
                        tag: speed,
                        threshold: 1.0,
                    });
                }
                let speed_node = instance_node_id(
                    self.ns.instances,
                    &format!("{}/SpindleSpeed", machine.device_path),
                );
                self.out
                    .reference(&spindle, &speed_node, ReferenceTypeId::HasComponent);
                self.spindle_override(machine, &path);
            }
        }
        // The active program: the program or job the machine runs, running while an order
        // is at its step.
        let program = format!("{root}/Production/ActiveProgram");
        let name_tag = self.any_tag(machine, &["Program", "JobName", "EngravedText"]);
        self.bind(&format!("{program}/Name"), name_tag);
        self.out.set(&format!("{program}/NumberInList"), 0u16);
        let busy = self.orders_at_steps(machine);
        let state = format!("{program}/State");
        if let Some(type_id) = self.out.type_of(&state) {
            self.state_machine(&state, &type_id, StateRule::Program { busy: busy.clone() });
        }
        // The order at the machine's step, as the one job of its production plan.
        let order = machine
            .shape
            .steps
            .first()
            .and_then(|&n| step_tag(self.catalog, n.into(), "CurrentOrder"));
        let plan_path = format!("{root}/Production/ProductionPlan");
        if let (Some(order), Some(plan)) = (
            order,
            self.optional(&format!("{root}/Production"), "ProductionPlan"),
        ) {
            let job = format!("{plan_path}/Job");
            self.out.object(
                self.types,
                &job,
                QualifiedName::new(mt, "Job"),
                Some("The order at this machine's step; Identifier is empty while none is"),
                &NodeId::new(mt, 29),
                &plan,
                ReferenceTypeId::HasOrderedComponent,
            );
            self.bind(&format!("{job}/Identifier"), Some(order));
            self.out.set(&format!("{job}/NumberInList"), 0u16);
            self.out.set(&format!("{job}/RunsPlanned"), 1u32);
            self.out.set(&format!("{job}/RunsPlanned/IsValid"), true);
            self.out.set(&format!("{job}/RunsCompleted"), 0u32);
            let state = format!("{job}/State");
            if let Some(type_id) = self.out.type_of(&state) {
                self.state_machine(&state, &type_id, StateRule::Program { busy });
            }
        }
        self.notification(machine, root);
        // Parts made since start.
        let parts = self.any_tag(machine, &["PartCount", "PrintedParts", "Jobs"]);
        if parts.is_some()
            && self
                .optional(&format!("{root}/Production"), "Statistics")
                .is_some()
        {
            let path = format!("{root}/Production/Statistics");
            if self.optional(&path, "PartsProducedInLifetime").is_some() {
                self.bind(&format!("{path}/PartsProducedInLifetime"), parts);
            }
        }
    }

    /// `Notification` (Machine Tools 8.6; both children optional in the type, both given):
    /// `Messages`, an event notifier on which the device's events and alarm conditions (a
    /// spindle overload) are reported as on the device itself (`opcua/events.rs`), and
    /// `Prognoses` with `PartUnload`, when the part at the machine's step will be done,
    /// estimated from the step's progress rate (`live::Derived::Due`).
    fn notification(&mut self, machine: &MachineDecl, root: &str) {
        let notification = format!("{root}/Notification");
        let messages = format!("{notification}/Messages");
        if self.optional(&notification, "Messages").is_some() {
            self.out.subscribe_to_events(&messages);
        }
        let Some(step) = machine.shape.steps.first() else {
            return;
        };
        let (Some(order), Some(progress)) = (
            step_tag(self.catalog, (*step).into(), "CurrentOrder"),
            step_tag(self.catalog, (*step).into(), "Progress"),
        ) else {
            return;
        };
        let Some(list) = self.optional(&notification, "Prognoses") else {
            return;
        };
        let path = format!("{notification}/Prognoses/PartUnload");
        self.out.object(
            self.types,
            &path,
            QualifiedName::new(self.ns.machine_tool, "PartUnload"),
            Some("The part of the order at this machine's step, to be unloaded at PredictedTime"),
            &NodeId::new(
                self.ns.machine_tool,
                ids::machine_tool::PART_UNLOAD_PROGNOSIS_TYPE,
            ),
            &list,
            ReferenceTypeId::HasComponent,
        );
        let station = machine
            .device_path
            .split('/')
            .nth(1)
            .unwrap_or(&machine.device_path);
        self.out.set(
            &format!("{path}/Location"),
            LocalizedText::new("en", station),
        );
        self.out.set(
            &format!("{path}/PartName"),
            format!("{} part", machine.name).as_str(),
        );
        if self.optional(&path, "PartIdentifier").is_some() {
            self.bind(&format!("{path}/PartIdentifier"), Some(order));
        }
        if let Some(node) = self.out.get(&format!("{path}/PredictedTime")).cloned() {
            self.bindings
                .derived
                .push(Derived::due(node, order, progress));
        }
    }

    /// The spindle's `Override` (percent): the device's `SpindleOverride` tag when it has
    /// one. The simulated mill has no spindle override knob (only `FeedOverride`, which is the
    /// feed's, not the spindle's): its spindle turns at the programmed speed, 100 %.
    fn spindle_override(&mut self, machine: &MachineDecl, spindle: &str) {
        if self.optional(spindle, "Override").is_none() {
            return;
        }
        let path = format!("{spindle}/Override");
        let tag = self.tag(machine, "SpindleOverride");
        let range = tag
            .and_then(|t| self.catalog.get(t))
            .and_then(|e| e.spec.range)
            .map_or((0.0, 150.0), |r| (r.low, r.high));
        match tag {
            Some(tag) => self.bind(&path, Some(tag)),
            None => self.out.set(&path, 100.0f64),
        }
        self.out.set(
            &format!("{path}/EngineeringUnits"),
            ExtensionObject::from_message(engineering_units("%")),
        );
        self.out.set(
            &format!("{path}/EURange"),
            ExtensionObject::from_message(opcua::types::Range {
                low: range.0,
                high: range.1,
            }),
        );
    }

    /// Robotics: one motion device with its axes, a controller with its task, safety states.
    fn robot(&mut self, machine: &MachineDecl, root: &str) {
        let r = self.ns.robotics;
        let ident = &machine.identification;
        let text = |s: &str| LocalizedText::new("", s);
        let Some(devices) = self.out.get(&format!("{root}/MotionDevices")).cloned() else {
            return;
        };
        let arm = format!("{root}/MotionDevices/Arm");
        self.out.object(
            self.types,
            &arm,
            QualifiedName::new(r, "Arm"),
            Some("The manipulator"),
            &NodeId::new(r, ids::robotics::MOTION_DEVICE_TYPE),
            &devices,
            ReferenceTypeId::HasComponent,
        );
        for (name, value) in [
            ("Manufacturer", Variant::from(text(&ident.manufacturer))),
            ("Model", Variant::from(text(&ident.model))),
            ("ProductCode", Variant::from(ident.product_code.as_str())),
            ("SerialNumber", Variant::from(ident.serial.as_str())),
            // MotionDeviceCategoryEnumeration: ARTICULATED_ROBOT.
            ("MotionDeviceCategory", Variant::Int32(1)),
        ] {
            self.out.set(&format!("{arm}/{name}"), value);
        }
        let speed = self.tag(machine, "SpeedOverride");
        self.bind(&format!("{arm}/ParameterSet/SpeedOverride"), speed);
        let axes_folder = self.out.get(&format!("{arm}/Axes")).cloned();
        if let Some(axes_folder) = axes_folder {
            for (i, tag_name) in machine.shape.axes.iter().enumerate() {
                let axis = format!("{arm}/Axes/Axis{}", i + 1);
                self.out.object(
                    self.types,
                    &axis,
                    QualifiedName::new(r, format!("Axis{}", i + 1).as_str()),
                    Some(&format!("Joint {}: tag {tag_name}", i + 1)),
                    &NodeId::new(r, ids::robotics::AXIS_TYPE),
                    &axes_folder,
                    ReferenceTypeId::HasComponent,
                );
                // AxisMotionProfileEnumeration: ROTARY.
                self.out
                    .set(&format!("{axis}/MotionProfile"), Variant::Int32(1));
                let position = format!("{axis}/ParameterSet/ActualPosition");
                let tag = self.tag(machine, tag_name);
                self.bind(&position, tag);
                let unit = tag
                    .and_then(|t| self.catalog.get(t))
                    .and_then(|e| e.spec.unit.clone())
                    .unwrap_or_else(|| "°".to_owned());
                self.out.set(
                    &format!("{position}/EngineeringUnits"),
                    ExtensionObject::from_message(engineering_units(&unit)),
                );
            }
        }
        // The controller and the task running the robot program.
        let Some(controllers) = self.out.get(&format!("{root}/Controllers")).cloned() else {
            return;
        };
        let controller = format!("{root}/Controllers/Controller");
        self.out.object(
            self.types,
            &controller,
            QualifiedName::new(r, "Controller"),
            Some("The robot controller"),
            &NodeId::new(r, 1003),
            &controllers,
            ReferenceTypeId::HasComponent,
        );
        for (name, value) in [
            ("Manufacturer", Variant::from(text(&ident.manufacturer))),
            ("Model", Variant::from(text(&ident.model))),
            ("ProductCode", Variant::from(ident.product_code.as_str())),
            ("SerialNumber", Variant::from(ident.serial.as_str())),
        ] {
            self.out.set(&format!("{controller}/{name}"), value);
        }
        self.out
            .set(&format!("{controller}/CurrentUser/Level"), "operator");
        if let Some(tasks) = self.out.get(&format!("{controller}/TaskControls")).cloned() {
            let task = format!("{controller}/TaskControls/Task");
            self.out.object(
                self.types,
                &task,
                QualifiedName::new(r, "Task"),
                Some("The task running the robot program"),
                &NodeId::new(r, 1011),
                &tasks,
                ReferenceTypeId::HasComponent,
            );
            self.out.set(&format!("{task}/ComponentName"), text("Task"));
            let program = self.tag(machine, "Program");
            self.bind(&format!("{task}/ParameterSet/TaskProgramName"), program);
            if let (Some(node), Some(tag)) = (
                self.out
                    .get(&format!("{task}/ParameterSet/TaskProgramLoaded"))
                    .cloned(),
                program,
            ) {
                self.bindings.derived.push(Derived::NotEmpty { node, tag });
            }
        }
        // Safety: no e-stop or protective stop on the bus unless the robot has those tags.
        if let Some(safety) = self.out.get(&format!("{root}/SafetyStates")).cloned() {
            let state = format!("{root}/SafetyStates/SafetyState");
            self.out.object(
                self.types,
                &state,
                QualifiedName::new(r, "SafetyState"),
                None,
                &NodeId::new(r, 1013),
                &safety,
                ReferenceTypeId::HasComponent,
            );
            for name in ["EmergencyStop", "ProtectiveStop"] {
                let path = format!("{state}/ParameterSet/{name}");
                self.out.set(&path, false);
                let tag = self.tag(machine, name);
                self.bind(&path, tag);
            }
            // OperationalModeEnumeration: AUTOMATIC.
            self.out.set(
                &format!("{state}/ParameterSet/OperationalMode"),
                Variant::Int32(3),
            );
        }
    }
}
