//! Builds the gateway's instance address space from the tag catalogue and the configuration.
//!
//! Every tag becomes a variable at its path under `Objects/Fabrique`; the objects along the
//! way are created on demand and typed from where they sit (a child of `Stations` is a
//! station, a child of a station a device, and so on: see [`type_for`]). NodeIds are strings
//! equal to the browse path, so a NodeId tells a person where the node is.

use std::collections::{HashMap, HashSet};

use fabrique_adapters::device::Identification;
use fabrique_adapters::{TagCatalog, TagId, TagSpec};
use opcua::nodes::{
    AccessLevel, MethodBuilder, NodeType, ObjectBuilder, TypeTree, VariableBuilder,
};
use opcua::server::address_space::AddressSpace;
use opcua::types::{
    BrowseDirection, DataTypeId, DataValue, LocalizedText, NodeId, ObjectId, ObjectTypeId,
    QualifiedName, ReferenceTypeId, StatusCode, UAString, VariableTypeId, Variant,
};

use super::tags::variable;

/// Namespace of the gateway's types (`nodesets/Fabrique.NodeSet2.xml`).
pub const TYPES_NAMESPACE: &str = "urn:fabrique-gateway:types";
/// Namespace of the instances built here.
pub const INSTANCES_NAMESPACE: &str = "urn:fabrique-gateway:instances";
/// Browse name and NodeId of the site object under `Objects`.
pub const ROOT: &str = "Fabrique";

/// Numeric ids of the object types in the types NodeSet.
mod types {
    pub const SITE: u32 = 1001;
    pub const LINE: u32 = 1002;
    pub const PRODUCTION_STEP: u32 = 1003;
    pub const STATION: u32 = 1004;
    pub const DEVICE: u32 = 1005;
    pub const ORDER: u32 = 1006;
    pub const INDICATORS: u32 = 1007;
    pub const VISITS: u32 = 1008;
    pub const DEVICE_STATUS: u32 = 1009;
    pub const ORDERS: u32 = 1010;
    pub const STOP: u32 = 1011;
    pub const SURVEY: u32 = 1012;
}

/// How an object is typed, from where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Folder,
    Typed(u32),
    Plain,
}

fn type_for(path: &str) -> ObjectKind {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["Line"] => ObjectKind::Typed(types::LINE),
        ["Line", "Steps"] | ["Stations"] | ["Orders", "Recent"] => ObjectKind::Folder,
        ["Line", "Steps", _] => ObjectKind::Typed(types::PRODUCTION_STEP),
        ["Stations", _] => ObjectKind::Typed(types::STATION),
        ["Stations", _, _] => ObjectKind::Typed(types::DEVICE),
        ["Stations", _, _, "Status"] => ObjectKind::Typed(types::DEVICE_STATUS),
        ["Orders"] => ObjectKind::Typed(types::ORDERS),
        ["Orders", "Recent", _] => ObjectKind::Typed(types::ORDER),
        ["Indicators"] => ObjectKind::Typed(types::INDICATORS),
        ["Visits"] => ObjectKind::Typed(types::VISITS),
        ["Visits", "Survey"] => ObjectKind::Typed(types::SURVEY),
        ["Stop"] => ObjectKind::Typed(types::STOP),
        // The gateway's own diagnostics (diagnostics.rs): plain folders, one per sink.
        ["Diagnostics"] | ["Diagnostics", "Sinks"] | ["Diagnostics", "Sinks", _] => {
            ObjectKind::Folder
        }
        _ => ObjectKind::Plain,
    }
}

/// What the address space shows that does not come from the bus.
pub struct StaticModel {
    pub site_name: String,
    pub line_models: Vec<String>,
    pub devices: Vec<DeviceNameplate>,
    /// Each step's trades (`<step path>`, French names), shown as `<step>/Trades` (journey).
    pub step_trades: Vec<(String, Vec<String>)>,
    /// Devices placed in the companion specifications' structure too (`standard` module).
    pub machines: Vec<super::standard::MachineDecl>,
}

pub struct DeviceNameplate {
    pub path: String,
    pub protocol: String,
    pub identification: Identification,
}

/// The methods the gateway offers, by NodeId, with the adapter method they forward to.
pub struct MethodSpec {
    pub parent: &'static str,
    pub name: &'static str,
    pub inputs: &'static [&'static str],
    pub outputs: &'static [&'static str],
    pub description: &'static str,
}

pub const LINE_METHODS: [MethodSpec; 3] = [
    MethodSpec {
        parent: "Line",
        name: "SubmitOrder",
        inputs: &["Model", "Text"],
        outputs: &["OrderId"],
        description: "Place a personalised order, as the QR code at the kiosk does",
    },
    MethodSpec {
        parent: "Line",
        name: "Start",
        inputs: &[],
        outputs: &[],
        description: "Start the line",
    },
    MethodSpec {
        parent: "Line",
        name: "Stop",
        inputs: &[],
        outputs: &[],
        description: "Stop the line; orders keep queueing",
    },
];

/// Methods of the visits producer (`server/src/visits`).
pub const VISITS_METHODS: [MethodSpec; 2] = [
    MethodSpec {
        parent: "Stop",
        name: "SetStop",
        inputs: &["Town", "Venue", "FirstDay", "LastDay"],
        outputs: &[],
        description: "Set the current stop (dates YYYY-MM-DD, first <= last); kept across restarts",
    },
    MethodSpec {
        parent: "Visits",
        name: "CheckIn",
        inputs: &["Audience", "Size"],
        outputs: &[],
        description: "Check a group in: audience code (middle_school, high_school, student, job_seeker, retraining, teacher, company, general_public) and size",
    },
];

/// Methods of the visitor's journey (`server/src/journey`): the kiosk and order lookup.
pub const JOURNEY_METHODS: [MethodSpec; 2] = [
    MethodSpec {
        parent: "Stations/Reception/Kiosk",
        name: "Scan",
        inputs: &["Code"],
        outputs: &["OrderId"],
        description: "Launch the design with this code as an order. BadNotFound: unknown code; BadAlreadyExists: launched before; BadRequestNotAllowed: expired; BadInvalidState: line stopped; BadInvalidArgument: not a code",
    },
    MethodSpec {
        parent: "Orders",
        name: "FindOrder",
        inputs: &["OrderId"],
        outputs: &["Model", "Text", "State", "CurrentStep", "DesignCode"],
        description: "Any order by id, not only those in the Recent slots (CurrentStep empty off the line; BadNotFound: no such order)",
    },
];

/// Method arguments that are numbers; every other argument is a String.
const UINT32_ARGUMENTS: [&str; 1] = ["Size"];

/// What the node manager needs to know about the nodes built here.
pub struct BuiltNodes {
    /// Index: `TagId`.
    pub tag_nodes: Vec<NodeId>,
    pub node_tags: HashMap<NodeId, TagId>,
    /// Method NodeId → `Parent/Name`, the name adapters know it by.
    pub methods: HashMap<NodeId, String>,
}

pub fn instance_node_id(ns: u16, path: &str) -> NodeId {
    if path.is_empty() {
        NodeId::new(ns, ROOT)
    } else {
        NodeId::new(ns, format!("{ROOT}/{path}"))
    }
}

struct Builder<'a> {
    space: &'a mut AddressSpace,
    ns: u16,
    types_ns: u16,
    objects: HashSet<String>,
}

impl Builder<'_> {
    fn id(&self, path: &str) -> NodeId {
        instance_node_id(self.ns, path)
    }

    fn name(&self, text: &str) -> QualifiedName {
        QualifiedName::new(self.ns, text)
    }

    /// Create the object at `path` and its missing ancestors; returns its NodeId.
    fn ensure_object(&mut self, path: &str) -> NodeId {
        let id = self.id(path);
        // The space check matters when a reload adds nodes to a running address space.
        if path.is_empty() || self.objects.contains(path) || self.space.node_exists(&id) {
            return id;
        }
        let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.ensure_object(parent_path);
        let kind = type_for(path);
        let type_id = match kind {
            ObjectKind::Folder => ObjectTypeId::FolderType.into(),
            ObjectKind::Typed(n) => NodeId::new(self.types_ns, n),
            ObjectKind::Plain => ObjectTypeId::BaseObjectType.into(),
        };
        let builder = ObjectBuilder::new(&id, self.name(name), name).has_type_definition(type_id);
        let builder = if parent_path.is_empty() || type_for(parent_path) != ObjectKind::Folder {
            builder.component_of(parent)
        } else {
            builder.organized_by(parent)
        };
        builder.insert(self.space);
        self.objects.insert(path.to_owned());
        id
    }

    fn root(&mut self) {
        let id = self.id("");
        ObjectBuilder::new(&id, self.name(ROOT), ROOT)
            .description("The mobile mini-factory at its current stop")
            .has_type_definition(NodeId::new(self.types_ns, types::SITE))
            .organized_by(ObjectId::ObjectsFolder)
            .insert(self.space);
        self.objects.insert(String::new());
    }

    /// A variable whose value does not come from the bus.
    fn constant(
        &mut self,
        parent_path: &str,
        name: &str,
        value: Variant,
        data_type: DataTypeId,
        property: bool,
    ) {
        let parent = self.ensure_object(parent_path);
        let path = if parent_path.is_empty() {
            name.to_owned()
        } else {
            format!("{parent_path}/{name}")
        };
        let id = self.id(&path);
        let rank = if matches!(value, Variant::Array(_)) {
            1
        } else {
            -1
        };
        let mut builder = VariableBuilder::new(&id, self.name(name), name)
            .data_type(data_type)
            .value_rank(rank)
            .value(value)
            .access_level(AccessLevel::CURRENT_READ)
            .user_access_level(AccessLevel::CURRENT_READ);
        if rank == 1 {
            builder = builder.array_dimensions(&[0]);
        }
        let builder = if property {
            builder
                .has_type_definition(VariableTypeId::PropertyType)
                .property_of(parent)
        } else {
            builder
                .has_type_definition(VariableTypeId::BaseDataVariableType)
                .component_of(parent)
        };
        builder.insert(self.space);
    }

    /// The tag's variable and its standard properties (`tags::variable` says what they are);
    /// with `variables` false (the tag node manager serves them) only the objects above it.
    fn tag(&mut self, spec: &TagSpec, variables: bool) -> NodeId {
        let parent = self.ensure_object(spec.parent());
        let id = self.id(&spec.path);
        if !variables {
            return id;
        }
        let builder = variable::builder(self.ns, spec);
        let builder = if spec.property {
            builder.property_of(parent)
        } else {
            builder.component_of(parent)
        };
        builder.insert(self.space);
        if let Some(NodeType::Variable(variable)) = self.space.find_mut(&id) {
            variable.set_data_value(DataValue {
                value: Some(Variant::Empty),
                status: Some(StatusCode::BadWaitingForInitialData),
                ..DataValue::null()
            });
        }
        for property in variable::Property::ALL {
            if let Some(builder) = variable::property_builder(self.ns, spec, property) {
                builder.property_of(id.clone()).insert(self.space);
            }
        }
        id
    }

    /// The device object with its identification properties.
    fn nameplate(&mut self, device: &DeviceNameplate) {
        self.ensure_object(&device.path);
        let plate = [
            ("Manufacturer", &device.identification.manufacturer),
            ("Model", &device.identification.model),
            ("SerialNumber", &device.identification.serial),
            ("Protocol", &device.protocol),
        ];
        for (name, value) in plate {
            self.constant(
                &device.path,
                name,
                Variant::from(value.as_str()),
                DataTypeId::String,
                true,
            );
        }
    }

    fn method(&mut self, spec: &MethodSpec) -> NodeId {
        let parent = self.ensure_object(spec.parent);
        let path = format!("{}/{}", spec.parent, spec.name);
        let id = self.id(&path);
        let args = |names: &[&str]| -> Vec<opcua::types::Argument> {
            names
                .iter()
                .map(|n| {
                    let data_type = if UINT32_ARGUMENTS.contains(n) {
                        DataTypeId::UInt32
                    } else {
                        DataTypeId::String
                    };
                    (*n, data_type).into()
                })
                .collect()
        };
        let mut builder = MethodBuilder::new(&id, self.name(spec.name), spec.name)
            .description(LocalizedText::new("en", spec.description))
            .executable(true)
            .user_executable(true)
            .component_of(parent);
        if !spec.inputs.is_empty() {
            builder = builder.input_args(
                self.space,
                &self.id(&format!("{path}/InputArguments")),
                &args(spec.inputs),
            );
        }
        if !spec.outputs.is_empty() {
            builder = builder.output_args(
                self.space,
                &self.id(&format!("{path}/OutputArguments")),
                &args(spec.outputs),
            );
        }
        builder.insert(self.space);
        id
    }
}

/// Build the instances into `space`. `ns` and `types_ns` are the namespace indexes.
pub fn build(
    space: &mut AddressSpace,
    ns: u16,
    types_ns: u16,
    model: &StaticModel,
    catalog: &TagCatalog,
    tag_variables: bool,
) -> BuiltNodes {
    let mut b = Builder {
        space,
        ns,
        types_ns,
        objects: HashSet::new(),
    };
    b.root();
    b.constant(
        "",
        "Name",
        Variant::from(model.site_name.as_str()),
        DataTypeId::String,
        true,
    );
    // The top-level objects exist even before anything fills them.
    for path in [
        "Stop",
        "Line",
        "Line/Steps",
        "Stations",
        "Orders",
        "Orders/Recent",
        "Indicators",
        "Visits",
    ] {
        b.ensure_object(path);
    }
    let models: Vec<UAString> = model
        .line_models
        .iter()
        .map(|m| UAString::from(m.as_str()))
        .collect();
    b.constant(
        "Line",
        "Models",
        Variant::from(models),
        DataTypeId::String,
        false,
    );
    for device in &model.devices {
        b.nameplate(device);
    }
    for (step, trades) in &model.step_trades {
        let names: Vec<UAString> = trades.iter().map(|t| UAString::from(t.as_str())).collect();
        b.constant(
            step,
            "Trades",
            Variant::from(names),
            DataTypeId::String,
            false,
        );
    }
    let mut tag_nodes = vec![NodeId::null(); catalog.len()];
    let mut node_tags = HashMap::with_capacity(catalog.len());
    for (tag, entry) in catalog.iter() {
        let id = b.tag(&entry.spec, tag_variables);
        node_tags.insert(id.clone(), tag);
        tag_nodes[tag.index()] = id;
    }
    let methods = LINE_METHODS
        .iter()
        .chain(VISITS_METHODS.iter())
        .chain(JOURNEY_METHODS.iter())
        .map(|m| (b.method(m), format!("{}/{}", m.parent, m.name)))
        .collect();
    BuiltNodes {
        tag_nodes,
        node_tags,
        methods,
    }
}

/// Add devices and tags to a running address space (a reload): the same nodes, with the same
/// NodeIds, as a start with that configuration would have built. Returns each tag's node.
pub fn add(
    space: &mut AddressSpace,
    ns: u16,
    types_ns: u16,
    devices: &[DeviceNameplate],
    tags: &[(TagId, &TagSpec)],
    tag_variables: bool,
) -> Vec<(TagId, NodeId)> {
    let mut b = Builder {
        space,
        ns,
        types_ns,
        objects: HashSet::new(),
    };
    for device in devices {
        b.nameplate(device);
    }
    tags.iter()
        .map(|&(tag, spec)| (tag, b.tag(spec, tag_variables)))
        .collect()
}

/// Remove the object at `path` and every node below it (hierarchical references, in our
/// namespace), with the references pointing at them. Returns how many nodes went.
pub fn remove_subtree(
    space: &mut AddressSpace,
    type_tree: &dyn TypeTree,
    ns: u16,
    path: &str,
) -> usize {
    let root = instance_node_id(ns, path);
    let mut doomed = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if !space.node_exists(&node) || !seen.insert(node.clone()) {
            continue;
        }
        let children: Vec<NodeId> = space
            .find_references(
                &node,
                Some((ReferenceTypeId::HierarchicalReferences, true)),
                type_tree,
                BrowseDirection::Forward,
            )
            .map(|r| r.target_node.clone())
            .filter(|child| child.namespace == ns && !seen.contains(child))
            .collect();
        stack.extend(children);
        doomed.push(node);
    }
    for node in &doomed {
        space.delete(node, true);
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_typed_from_where_they_sit() {
        assert_eq!(
            type_for("Line/Steps/Step4"),
            ObjectKind::Typed(types::PRODUCTION_STEP)
        );
        assert_eq!(
            type_for("Stations/Printing"),
            ObjectKind::Typed(types::STATION)
        );
        assert_eq!(
            type_for("Stations/Printing/Printer3D"),
            ObjectKind::Typed(types::DEVICE)
        );
        assert_eq!(
            type_for("Stations/Printing/Printer3D/Status"),
            ObjectKind::Typed(types::DEVICE_STATUS)
        );
        assert_eq!(type_for("Orders/Recent"), ObjectKind::Folder);
        assert_eq!(type_for("Diagnostics/Sinks/Mqtt"), ObjectKind::Folder);
        assert_eq!(
            type_for("Stations/Printing/Printer3D/Axes"),
            ObjectKind::Plain
        );
    }
}
