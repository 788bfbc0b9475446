//! Making instances of standard types: an object with every Mandatory child its type (with
//! supertypes and interfaces) declares, recursively, plus the Optional children asked for.
//!
//! Nodes are collected first and inserted at the end ([`Instances::apply`]), because the types
//! they are made from are read from the same address space they go into. NodeIds are strings:
//! the instance's path (`Machines/CNC/Identification/Manufacturer`), like the gateway's own.

use std::collections::HashMap;

use opcua::nodes::{AccessLevel, EventNotifier, Method, NodeType, Object, Variable};
use opcua::server::address_space::AddressSpace;
use opcua::types::{
    DataEncoding, DataValue, LocalizedText, NodeId, NumericRange, QualifiedName, ReferenceTypeId,
    TimestampsToReturn, Variant,
};

use super::types::{Declaration, Rule, Types};

/// Deepest nesting followed; the companion types stop well before.
const MAX_DEPTH: usize = 16;

/// What an instance node was made from, to find its optional children later.
#[derive(Clone)]
struct Made {
    id: NodeId,
    type_definition: Option<NodeId>,
    declaration: Option<NodeId>,
}

impl Made {
    /// An object of `type_id` that no type declares (a root of what is built).
    fn typed(id: NodeId, type_id: &NodeId) -> Self {
        Made {
            id,
            type_definition: Some(type_id.clone()),
            declaration: None,
        }
    }
}

pub struct Instances {
    ns: u16,
    nodes: Vec<NodeType>,
    by_id: HashMap<NodeId, usize>,
    references: Vec<(NodeId, NodeId, NodeId)>,
    made: HashMap<String, Made>,
}

impl Instances {
    pub fn new(ns: u16) -> Self {
        Instances {
            ns,
            nodes: Vec::new(),
            by_id: HashMap::new(),
            references: Vec::new(),
            made: HashMap::new(),
        }
    }

    pub fn id(&self, path: &str) -> NodeId {
        NodeId::new(self.ns, path)
    }

    /// The NodeId of the instance at `path`, if made.
    pub fn get(&self, path: &str) -> Option<&NodeId> {
        self.made.get(path).map(|m| &m.id)
    }

    pub fn reference(
        &mut self,
        source: &NodeId,
        target: &NodeId,
        reference_type: impl Into<NodeId>,
    ) {
        self.references
            .push((source.clone(), target.clone(), reference_type.into()));
    }

    /// An object of `type_id` at `path`, below `parent`, with its mandatory children.
    #[allow(clippy::too_many_arguments)]
    pub fn object(
        &mut self,
        types: &Types<'_>,
        path: &str,
        browse_name: QualifiedName,
        description: Option<&str>,
        type_id: &NodeId,
        parent: &NodeId,
        reference_type: impl Into<NodeId>,
    ) -> NodeId {
        let id = self.id(path);
        let name = browse_name.name.to_string();
        let mut object = Object::new(&id, browse_name, name.as_str(), EventNotifier::empty());
        if let Some(text) = description {
            use opcua::nodes::NodeBase;
            object.set_description(LocalizedText::new("en", text));
        }
        self.push(object.into());
        self.reference(parent, &id, reference_type);
        self.reference(&id, type_id, ReferenceTypeId::HasTypeDefinition);
        self.made
            .insert(path.to_owned(), Made::typed(id.clone(), type_id));
        self.mandatory_children(types, path, Some(type_id), None, 0);
        id
    }

    /// The child named `name` (in any namespace) that the type of the instance at `path`
    /// declares, with its mandatory children; `None` if nothing of that name is declared.
    /// Asking for one made already returns it.
    pub fn optional(&mut self, types: &Types<'_>, path: &str, name: &str) -> Option<NodeId> {
        let child_path = format!("{path}/{name}");
        if let Some(made) = self.made.get(&child_path) {
            return Some(made.id.clone());
        }
        let parent = self.made.get(path)?.clone();
        let declaration = types
            .children(parent.type_definition.as_ref(), parent.declaration.as_ref())
            .into_iter()
            .find(|d| d.browse_name.name.as_ref() == name)?;
        Some(self.make(types, path, &parent.id, &declaration, 0))
    }

    /// Set the value of the variable made at `path` (ignored if there is none).
    pub fn set(&mut self, path: &str, value: impl Into<Variant>) {
        let Some(made) = self.made.get(path) else {
            tracing::warn!(path, "standard address space: no variable to set");
            return;
        };
        if let Some(NodeType::Variable(v)) = self.by_id.get(&made.id).map(|&i| &mut self.nodes[i]) {
            v.set_data_value(DataValue::new_now(value.into()));
        }
    }

    /// Give an object made elsewhere (the gateway's own tree) the mandatory children that its
    /// type inherits from the companion types: every mandatory declaration not in namespace
    /// `own` (those the gateway's builder renders itself, from the tags).
    pub fn adopt(&mut self, types: &Types<'_>, path: &str, id: NodeId, type_id: &NodeId, own: u16) {
        self.made
            .insert(path.to_owned(), Made::typed(id.clone(), type_id));
        for child in types.children(Some(type_id), None) {
            if child.rule == Rule::Mandatory && child.browse_name.namespace_index != own {
                self.make(types, path, &id, &child, 1);
            }
        }
    }

    /// Make the object at `path` an event notifier (clients subscribe to events on it).
    pub fn subscribe_to_events(&mut self, path: &str) {
        let Some(made) = self.made.get(path) else {
            return;
        };
        if let Some(NodeType::Object(o)) = self.by_id.get(&made.id).map(|&i| &mut self.nodes[i]) {
            o.set_event_notifier(EventNotifier::SUBSCRIBE_TO_EVENTS);
        }
    }

    /// The type definition of the instance at `path`.
    pub fn type_of(&self, path: &str) -> Option<NodeId> {
        self.made.get(path)?.type_definition.clone()
    }

    fn push(&mut self, node: NodeType) {
        let id = node.as_node().node_id().clone();
        self.by_id.insert(id, self.nodes.len());
        self.nodes.push(node);
    }

    fn mandatory_children(
        &mut self,
        types: &Types<'_>,
        path: &str,
        type_id: Option<&NodeId>,
        declaration: Option<&NodeId>,
        depth: usize,
    ) {
        if depth >= MAX_DEPTH {
            return;
        }
        let parent = self.id(path);
        for child in types.children(type_id, declaration) {
            if child.rule == Rule::Mandatory {
                self.make(types, path, &parent, &child, depth + 1);
            }
        }
    }

    /// One instance of `declaration` below `parent` (at `parent_path`), and its children.
    fn make(
        &mut self,
        types: &Types<'_>,
        parent_path: &str,
        parent: &NodeId,
        declaration: &Declaration,
        depth: usize,
    ) -> NodeId {
        let name = declaration.browse_name.name.as_ref();
        let mut path = format!("{parent_path}/{name}");
        // Two declarations may share a name in different namespaces.
        if self.made.contains_key(&path) {
            path = format!("{path}~{}", declaration.browse_name.namespace_index);
        }
        let id = self.id(&path);
        let browse_name = declaration.browse_name.clone();
        let Some(found) = types.find(&declaration.node) else {
            return id;
        };
        let source = found.as_node();
        let display_name = source.display_name().clone();
        let node: NodeType = match found {
            NodeType::Object(_) => {
                Object::new(&id, browse_name, display_name, EventNotifier::empty()).into()
            }
            NodeType::Variable(v) => {
                let value = v
                    .value(
                        TimestampsToReturn::Neither,
                        &NumericRange::None,
                        &DataEncoding::Binary,
                        0.0,
                    )
                    .value
                    .unwrap_or(Variant::Empty);
                let mut variable = Variable::new_data_value(
                    &id,
                    browse_name,
                    display_name,
                    v.data_type(),
                    Some(v.value_rank()),
                    None,
                    value,
                );
                if let Some(dims) = v.array_dimensions() {
                    variable.set_array_dimensions(&dims);
                }
                variable.set_access_level(AccessLevel::CURRENT_READ);
                variable.set_user_access_level(AccessLevel::CURRENT_READ);
                variable.into()
            }
            NodeType::Method(_) => Method::new(&id, browse_name, display_name, false, false).into(),
            _ => return id,
        };
        if let Some(description) = source.description() {
            let mut node = node;
            node.as_mut_node().set_description(description.clone());
            self.push(node);
        } else {
            self.push(node);
        }
        self.reference(parent, &id, declaration.reference_type.clone());
        let type_definition = types.type_definition(&declaration.node);
        if let Some(t) = &type_definition {
            self.reference(&id, t, ReferenceTypeId::HasTypeDefinition);
        }
        self.made.insert(
            path.clone(),
            Made {
                id: id.clone(),
                type_definition: type_definition.clone(),
                declaration: Some(declaration.node.clone()),
            },
        );
        self.mandatory_children(
            types,
            &path,
            type_definition.as_ref(),
            Some(&declaration.node),
            depth,
        );
        id
    }

    /// Insert everything into `space`; returns how many nodes.
    pub fn apply(self, space: &mut AddressSpace) -> usize {
        let count = self.nodes.len();
        for node in self.nodes {
            space.insert::<_, NodeId>(node, None);
        }
        space.insert_references(
            self.references
                .iter()
                .map(|(source, target, reference_type)| (source, target, reference_type.clone())),
        );
        count
    }
}
