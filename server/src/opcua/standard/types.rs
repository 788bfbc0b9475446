//! Reading type definitions: a type's InstanceDeclarations (its own, its supertypes' and its
//! interfaces'), their modelling rules, and the type definitions of instances.
//!
//! The types live in two address spaces: the core namespace in async-opcua's core node
//! manager, the companion specifications and the gateway's own types in the gateway's. Both are
//! read together, which is why this does not go through one `AddressSpace`'s browse helpers.

use opcua::nodes::{DefaultTypeTree, NodeType};
use opcua::server::address_space::AddressSpace;
use opcua::types::{BrowseDirection, NodeId, ObjectId, QualifiedName, ReferenceTypeId};

/// A `HasModellingRule` target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Mandatory,
    Optional,
    MandatoryPlaceholder,
    OptionalPlaceholder,
    /// ExposesItsArray and anything newer: never instantiated here.
    Other,
}

/// One InstanceDeclaration: a child of a type (or of another InstanceDeclaration).
#[derive(Debug, Clone)]
pub struct Declaration {
    pub node: NodeId,
    /// HasComponent, HasProperty, HasAddIn or HasOrderedComponent.
    pub reference_type: NodeId,
    pub browse_name: QualifiedName,
    pub rule: Rule,
}

/// The reference types that make a child an InstanceDeclaration of its parent.
const AGGREGATES: [ReferenceTypeId; 4] = [
    ReferenceTypeId::HasComponent,
    ReferenceTypeId::HasProperty,
    ReferenceTypeId::HasAddIn,
    ReferenceTypeId::HasOrderedComponent,
];

pub struct Types<'a> {
    spaces: Vec<&'a AddressSpace>,
    /// Only to satisfy `find_references`' signature: every lookup here filters by exact
    /// reference type itself.
    tree: DefaultTypeTree,
}

impl<'a> Types<'a> {
    pub fn new(spaces: Vec<&'a AddressSpace>) -> Self {
        Types {
            spaces,
            tree: DefaultTypeTree::new(),
        }
    }

    pub fn find(&self, id: &NodeId) -> Option<&'a NodeType> {
        self.spaces.iter().find_map(|s| s.find(id))
    }

    /// Targets of `source`'s references of exactly `reference_type`, in both spaces.
    pub fn targets(
        &self,
        source: &NodeId,
        reference_type: impl Into<NodeId>,
        direction: BrowseDirection,
    ) -> Vec<NodeId> {
        let reference_type = reference_type.into();
        let mut out: Vec<NodeId> = Vec::new();
        for space in &self.spaces {
            for r in space.find_references(source, None::<(NodeId, bool)>, &self.tree, direction) {
                if *r.reference_type == reference_type && !out.contains(r.target_node) {
                    out.push(r.target_node.clone());
                }
            }
        }
        out
    }

    pub fn supertype(&self, type_id: &NodeId) -> Option<NodeId> {
        self.targets(
            type_id,
            ReferenceTypeId::HasSubtype,
            BrowseDirection::Inverse,
        )
        .into_iter()
        .next()
    }

    /// `type_id` and its supertypes, most derived first.
    pub fn chain(&self, type_id: &NodeId) -> Vec<NodeId> {
        let mut chain = Vec::new();
        let mut next = Some(type_id.clone());
        while let Some(id) = next {
            if chain.contains(&id) {
                break;
            }
            next = self.supertype(&id);
            chain.push(id);
        }
        chain
    }

    pub fn is_subtype_of(&self, type_id: &NodeId, ancestor: &NodeId) -> bool {
        self.chain(type_id).contains(ancestor)
    }

    pub fn type_definition(&self, instance: &NodeId) -> Option<NodeId> {
        self.targets(
            instance,
            ReferenceTypeId::HasTypeDefinition,
            BrowseDirection::Forward,
        )
        .into_iter()
        .next()
    }

    pub fn rule(&self, declaration: &NodeId) -> Option<Rule> {
        let rule = self
            .targets(
                declaration,
                ReferenceTypeId::HasModellingRule,
                BrowseDirection::Forward,
            )
            .into_iter()
            .next()?;
        let id = |o: ObjectId| NodeId::from(o);
        Some(if rule == id(ObjectId::ModellingRule_Mandatory) {
            Rule::Mandatory
        } else if rule == id(ObjectId::ModellingRule_Optional) {
            Rule::Optional
        } else if rule == id(ObjectId::ModellingRule_MandatoryPlaceholder) {
            Rule::MandatoryPlaceholder
        } else if rule == id(ObjectId::ModellingRule_OptionalPlaceholder) {
            Rule::OptionalPlaceholder
        } else {
            Rule::Other
        })
    }

    /// Children of `parent` (a type or an InstanceDeclaration) that carry a modelling rule.
    fn own_declarations(&self, parent: &NodeId) -> Vec<Declaration> {
        let mut out = Vec::new();
        for reference_type in AGGREGATES {
            for node in self.targets(parent, reference_type, BrowseDirection::Forward) {
                let (Some(rule), Some(found)) = (self.rule(&node), self.find(&node)) else {
                    continue;
                };
                out.push(Declaration {
                    browse_name: found.as_node().browse_name().clone(),
                    node,
                    reference_type: reference_type.into(),
                    rule,
                });
            }
        }
        out
    }

    /// The InstanceDeclarations of `type_id`: its supertypes' and interfaces' first, each
    /// replaced by a more derived one of the same browse name.
    pub fn declarations(&self, type_id: &NodeId) -> Vec<Declaration> {
        let mut out: Vec<Declaration> = Vec::new();
        for ty in self.chain(type_id).iter().rev() {
            let interfaces =
                self.targets(ty, ReferenceTypeId::HasInterface, BrowseDirection::Forward);
            for interface in interfaces {
                for d in self.declarations(&interface) {
                    merge(&mut out, d);
                }
            }
            for d in self.own_declarations(ty) {
                merge(&mut out, d);
            }
        }
        out
    }

    /// What an instance made from `declaration` (or of plain type `type_id`) must or may
    /// have: the declarations of its type definition, overridden by those nested under the
    /// declaration itself.
    pub fn children(
        &self,
        type_id: Option<&NodeId>,
        declaration: Option<&NodeId>,
    ) -> Vec<Declaration> {
        let mut out = type_id.map(|t| self.declarations(t)).unwrap_or_default();
        if let Some(declaration) = declaration {
            for d in self.own_declarations(declaration) {
                merge(&mut out, d);
            }
        }
        out
    }
}

fn merge(out: &mut Vec<Declaration>, d: Declaration) {
    match out.iter_mut().find(|o| o.browse_name == d.browse_name) {
        Some(existing) => *existing = d,
        None => out.push(d),
    }
}
