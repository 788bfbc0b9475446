//! Browse and TranslateBrowsePaths for tag variables: the references a tag variable had as a
//! node of the in-memory address space (its parent object's HasComponent or HasProperty, its
//! type definition, its EngineeringUnits and EURange properties), computed from the catalogue.

use std::collections::{HashMap, VecDeque};

use fabrique_adapters::{TagCatalog, TagId, TagSpec};
use opcua::nodes::{ReferenceDirection, TypeTree};
use opcua::server::node_manager::{
    AddReferenceResult, BrowseNode, BrowsePathItem, ExternalReference, NodeMetadata, RequestContext,
};
use opcua::types::{
    LocalizedText, NodeClass, NodeId, QualifiedName, ReferenceDescription, ReferenceTypeId,
    StatusCode, VariableTypeId,
};

use super::super::address_space::{browse_namespace, instance_node_id};
use super::ids::{self, TagNode};
use super::variable::{type_definition, Property};

/// References left over when a node had more than the client's maximum per node.
struct Continuation {
    refs: VecDeque<ReferenceDescription>,
}

/// The reference from a tag's parent object to the tag.
fn parent_reference(spec: &TagSpec) -> ReferenceTypeId {
    if spec.property {
        ReferenceTypeId::HasProperty
    } else {
        ReferenceTypeId::HasComponent
    }
}

/// What a reference to `node` shows of it.
pub fn metadata(
    (ns, types_ns): (u16, u16),
    catalog: &TagCatalog,
    node: TagNode,
) -> Option<NodeMetadata> {
    let spec = &catalog.get(node.tag())?.spec;
    Some(match node {
        TagNode::Variable(_) => NodeMetadata {
            node_id: instance_node_id(ns, &spec.path).into(),
            type_definition: NodeId::from(type_definition(spec)).into(),
            browse_name: QualifiedName::new(
                browse_namespace(ns, types_ns, catalog, &spec.path),
                spec.name(),
            ),
            display_name: LocalizedText::from(spec.name()),
            node_class: NodeClass::Variable,
        },
        TagNode::Property(_, property) => NodeMetadata {
            node_id: property.node_id(ns, &spec.path).into(),
            type_definition: NodeId::from(VariableTypeId::PropertyType).into(),
            browse_name: QualifiedName::new(0, property.name()),
            display_name: LocalizedText::from(property.name()),
            node_class: NodeClass::Variable,
        },
    })
}

/// The references this node manager knows from `node` that lead to its own nodes, forward
/// or inverse: (target, reference type, forward).
fn own_references(
    catalog: &TagCatalog,
    children: &HashMap<String, Vec<TagId>>,
    from: &From,
) -> Vec<(TagNode, ReferenceTypeId, bool)> {
    match from {
        From::Object(path) => children
            .get(*path)
            .into_iter()
            .flatten()
            .filter_map(|&tag| {
                let spec = &catalog.get(tag)?.spec;
                Some((TagNode::Variable(tag), parent_reference(spec), true))
            })
            .collect(),
        From::Tag(TagNode::Variable(tag)) => {
            let Some(entry) = catalog.get(*tag) else {
                return Vec::new();
            };
            Property::ALL
                .into_iter()
                .filter(|p| p.applies_to(&entry.spec))
                .map(|p| {
                    let target = TagNode::Property(*tag, p);
                    (target, ReferenceTypeId::HasProperty, true)
                })
                .collect()
        }
        From::Tag(TagNode::Property(tag, _)) => {
            vec![(TagNode::Variable(*tag), ReferenceTypeId::HasProperty, false)]
        }
    }
}

/// Where a browse or a path step starts.
enum From<'a> {
    /// An object of the in-memory address space, by path.
    Object(&'a str),
    Tag(TagNode),
}

fn start<'a>(ns: u16, catalog: &TagCatalog, id: &'a NodeId) -> Option<From<'a>> {
    match ids::parse(ns, catalog, id) {
        Some(node) => Some(From::Tag(node)),
        None => ids::path_of(ns, id).map(From::Object),
    }
}

pub fn browse(
    names: (u16, u16),
    catalog: &TagCatalog,
    children: &HashMap<String, Vec<TagId>>,
    type_tree: &dyn TypeTree,
    node: &mut BrowseNode,
) {
    let ns = names.0;
    if let Some(mut point) = node.take_continuation_point::<Continuation>() {
        while node.remaining() > 0 {
            let Some(reference) = point.refs.pop_front() else {
                break;
            };
            // Filtered when first browsed.
            node.add_unchecked(reference);
        }
        if !point.refs.is_empty() {
            node.set_next_continuation_point(point);
        }
        return;
    }
    let id = node.node_id().clone();
    let Some(from) = start(ns, catalog, &id) else {
        return;
    };
    let mut full = VecDeque::new();
    for (target, reference, forward) in own_references(catalog, children, &from) {
        if (forward && !node.allows_forward()) || (!forward && !node.allows_inverse()) {
            continue;
        }
        let Some(meta) = metadata(names, catalog, target) else {
            continue;
        };
        if let AddReferenceResult::Full(r) =
            node.add(type_tree, meta.into_ref_desc(forward, reference))
        {
            full.push_back(r);
        }
    }
    if let From::Tag(tag_node) = from {
        node.set_status(StatusCode::Good);
        // Type definitions are namespace 0's and the parent objects the in-memory node
        // manager's: they describe their own nodes.
        let Some(spec) = catalog.get(tag_node.tag()).map(|e| &e.spec) else {
            return;
        };
        let type_definition: NodeId = match tag_node {
            TagNode::Variable(_) => type_definition(spec).into(),
            TagNode::Property(..) => VariableTypeId::PropertyType.into(),
        };
        if node.allows_forward() {
            node.push_external_reference(ExternalReference::new(
                type_definition.into(),
                ReferenceTypeId::HasTypeDefinition.into(),
                ReferenceDirection::Forward,
            ));
        }
        if let (TagNode::Variable(_), true) = (tag_node, node.allows_inverse()) {
            node.push_external_reference(ExternalReference::new(
                instance_node_id(ns, spec.parent()).into(),
                parent_reference(spec).into(),
                ReferenceDirection::Inverse,
            ));
        }
    }
    if !full.is_empty() {
        node.set_next_continuation_point(Box::new(Continuation { refs: full }));
    }
}

fn reference_matches(
    wanted: &NodeId,
    include_subtypes: bool,
    actual: ReferenceTypeId,
    type_tree: &dyn TypeTree,
) -> bool {
    let actual: NodeId = actual.into();
    wanted.is_null()
        || actual == *wanted
        || (include_subtypes && type_tree.is_subtype_of(&actual, wanted))
}

pub fn translate(
    names: (u16, u16),
    catalog: &TagCatalog,
    children: &HashMap<String, Vec<TagId>>,
    type_tree: &dyn TypeTree,
    context: &RequestContext,
    item: &mut BrowsePathItem,
) {
    let ns = names.0;
    let id = item.node_id().clone();
    // Another node manager followed a reference to one of our nodes without knowing its
    // browse name (the companion structure's references to tags): check it here.
    if let Some(name) = item.unmatched_browse_name() {
        let Some(node) = ids::parse(ns, catalog, &id) else {
            return;
        };
        let matches = metadata(names, catalog, node)
            .is_some_and(|m| name.is_null() || m.browse_name == *name);
        if !matches {
            return;
        }
        item.set_browse_name_matched(context.current_node_manager_index);
    }
    let Some(from) = start(ns, catalog, &id) else {
        return;
    };
    let mut current = vec![from];
    let mut found = Vec::new();
    for (depth, element) in item.path().iter().enumerate() {
        let mut next = Vec::new();
        for from in &current {
            for (target, reference, forward) in own_references(catalog, children, from) {
                if forward == element.is_inverse
                    || !reference_matches(
                        &element.reference_type_id,
                        element.include_subtypes,
                        reference,
                        type_tree,
                    )
                {
                    continue;
                }
                let Some(meta) = metadata(names, catalog, target) else {
                    continue;
                };
                if element.target_name.is_null() || meta.browse_name == element.target_name {
                    found.push((meta.node_id.node_id, depth + 1));
                    next.push(From::Tag(target));
                }
            }
        }
        if next.is_empty() {
            break;
        }
        current = next;
    }
    for (node, depth) in found {
        item.add_element(node, depth, None);
    }
}
