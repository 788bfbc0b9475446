//! Builds the gateway's instance address space from the tag catalogue and the configuration.
//!
//! Every tag becomes a variable at its path under `Objects/Fabrique`. Objects are typed as the
//! adapter that owns them declared them ([`fabrique_adapters::TagRegistrar::object`]); an
//! object nobody declared (an intermediate such as `<device>/Axes`) is a `BaseObjectType`.
//! Methods, with their arguments, are the ones adapters declared
//! ([`fabrique_adapters::TagRegistrar::method`]). NodeIds are strings equal to the browse
//! path, so a NodeId tells a person where the node is.

use std::collections::{HashMap, HashSet};

use fabrique_adapters::device::Identification;
use fabrique_adapters::{
    ArgumentSpec, FabriqueType, MethodSpec, ObjectType, TagCatalog, TagId, TagSpec,
};
use opcua::nodes::{
    AccessLevel, MethodBuilder, NodeType, ObjectBuilder, TypeTree, VariableBuilder,
};
use opcua::server::address_space::AddressSpace;
use opcua::types::{
    Argument, BrowseDirection, DataTypeId, DataValue, LocalizedText, NodeId, ObjectId,
    ObjectTypeId, QualifiedName, ReferenceTypeId, StatusCode, UAString, VariableTypeId, Variant,
};

use super::tags::variable;
use fabrique_adapters::ua::data_type_id;

/// Namespace of the gateway's types (`nodesets/Fabrique.NodeSet2.xml`).
pub const TYPES_NAMESPACE: &str = "urn:fabrique-gateway:types";
/// Namespace of the instances built here.
pub const INSTANCES_NAMESPACE: &str = "urn:fabrique-gateway:instances";
/// Browse name and NodeId of the site object under `Objects`.
pub const ROOT: &str = "Fabrique";

/// The TypeDefinition NodeId of a declared object type.
pub fn type_definition(object_type: ObjectType, types_ns: u16) -> NodeId {
    match object_type {
        ObjectType::Folder => ObjectTypeId::FolderType.into(),
        ObjectType::BaseObject => ObjectTypeId::BaseObjectType.into(),
        ObjectType::Fabrique(t) => NodeId::new(types_ns, t.id()),
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

/// What the node manager needs to know about the nodes built here.
pub struct BuiltNodes {
    /// Index: `TagId`.
    pub tag_nodes: Vec<NodeId>,
    pub node_tags: HashMap<NodeId, TagId>,
}

/// The namespace of the BrowseName of the node at `path`: the types namespace for a child
/// its parent's Fabrique type declares (as the type declares it, so a browse path resolved
/// from the type finds it), the instances namespace otherwise.
pub fn browse_namespace(ns: u16, types_ns: u16, catalog: &TagCatalog, path: &str) -> u16 {
    if catalog.declared_by_parent(path) {
        types_ns
    } else {
        ns
    }
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
    /// Where the object types come from.
    catalog: &'a TagCatalog,
    objects: HashSet<String>,
}

impl Builder<'_> {
    fn id(&self, path: &str) -> NodeId {
        instance_node_id(self.ns, path)
    }

    fn name(&self, text: &str) -> QualifiedName {
        QualifiedName::new(self.ns, text)
    }

    /// The BrowseName of the node at `path`, whose last segment is `text`.
    fn child_name(&self, path: &str, text: &str) -> QualifiedName {
        let ns = browse_namespace(self.ns, self.types_ns, self.catalog, path);
        QualifiedName::new(ns, text)
    }

    fn object_type(&self, path: &str) -> ObjectType {
        self.catalog
            .object_type(path)
            .unwrap_or(ObjectType::BaseObject)
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
        let type_id = type_definition(self.object_type(path), self.types_ns);
        let builder =
            ObjectBuilder::new(&id, self.child_name(path, name), name).has_type_definition(type_id);
        let folder = ObjectType::Folder;
        let builder = if parent_path.is_empty() || self.object_type(parent_path) != folder {
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
            .has_type_definition(NodeId::new(self.types_ns, FabriqueType::Site.id()))
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
        let mut builder = VariableBuilder::new(&id, self.child_name(&path, name), name)
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
        let name_ns = browse_namespace(self.ns, self.types_ns, self.catalog, &spec.path);
        let builder = variable::builder(self.ns, name_ns, spec);
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
        let parent = self.ensure_object(&spec.object);
        let path = spec.path();
        let id = self.id(&path);
        let args = |specs: &[ArgumentSpec]| -> Vec<Argument> {
            specs
                .iter()
                .map(|a| Argument {
                    name: UAString::from(a.name.as_str()),
                    data_type: data_type_id(a.data_type).into(),
                    value_rank: -1,
                    array_dimensions: None,
                    description: a
                        .description
                        .as_deref()
                        .map_or_else(LocalizedText::null, |d| LocalizedText::new("en", d)),
                })
                .collect()
        };
        let mut builder = MethodBuilder::new(&id, self.name(&spec.name), spec.name.as_str())
            .description(LocalizedText::new("en", &spec.description))
            .executable(true)
            .user_executable(true)
            .component_of(parent);
        if !spec.inputs.is_empty() {
            builder = builder.input_args(
                self.space,
                &self.id(&format!("{path}/InputArguments")),
                &args(&spec.inputs),
            );
        }
        if !spec.outputs.is_empty() {
            builder = builder.output_args(
                self.space,
                &self.id(&format!("{path}/OutputArguments")),
                &args(&spec.outputs),
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
        catalog,
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
    // Declared objects exist even before anything fills them.
    for object in catalog.objects() {
        b.ensure_object(&object.path);
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
    // Calls find their method in the catalogue by NodeId (`<object>/<name>`).
    for (_, method) in catalog.methods() {
        b.method(method);
    }
    BuiltNodes {
        tag_nodes,
        node_tags,
    }
}

/// Add devices, tags and methods to a running address space (a reload): the same nodes, with
/// the same NodeIds, as a start with that configuration would have built. Returns each tag's
/// node.
/// Objects are typed from `catalog`, the grown catalogue.
pub fn add(
    space: &mut AddressSpace,
    (ns, types_ns): (u16, u16),
    catalog: &TagCatalog,
    devices: &[DeviceNameplate],
    tags: &[(TagId, &TagSpec)],
    tag_variables: bool,
) -> Vec<(TagId, NodeId)> {
    let mut b = Builder {
        space,
        ns,
        types_ns,
        catalog,
        objects: HashSet::new(),
    };
    for device in devices {
        b.nameplate(device);
    }
    let added = tags
        .iter()
        .map(|&(tag, spec)| (tag, b.tag(spec, tag_variables)))
        .collect();
    // Methods the added adapters declared (those of the others exist already).
    let new_methods: Vec<&MethodSpec> = catalog
        .methods()
        .map(|(_, m)| m)
        .filter(|m| !b.space.node_exists(&b.id(&m.path())))
        .collect();
    for method in new_methods {
        b.method(method);
    }
    added
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
