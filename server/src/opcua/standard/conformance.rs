//! Conformance by test, not by eye: every instance reachable from the given roots is checked
//! against its TypeDefinition. Each child that the type (with its supertypes and interfaces)
//! declares Mandatory must exist with the same BrowseName, NodeClass and, for a variable, the
//! declared DataType or a subtype of it; every TypeDefinition must resolve to a node of a
//! namespace the server serves.

use std::collections::{HashSet, VecDeque};

use opcua::nodes::NodeType;
use opcua::types::{BrowseDirection, NodeId, ReferenceTypeId};

use super::types::{Rule, Types};

/// One way an instance falls short of its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Browse path from the root the walk started at (`Machines/CNC/Identification`).
    pub path: String,
    pub node: NodeId,
    pub problem: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.path, self.node, self.problem)
    }
}

/// References followed from an instance to the instances below it.
const HIERARCHY: [ReferenceTypeId; 5] = [
    ReferenceTypeId::HasComponent,
    ReferenceTypeId::HasProperty,
    ReferenceTypeId::HasAddIn,
    ReferenceTypeId::HasOrderedComponent,
    ReferenceTypeId::Organizes,
];

/// Aggregates: how a type's children hang below an instance.
const AGGREGATES: [ReferenceTypeId; 4] = [
    ReferenceTypeId::HasComponent,
    ReferenceTypeId::HasProperty,
    ReferenceTypeId::HasAddIn,
    ReferenceTypeId::HasOrderedComponent,
];

/// Which namespaces serve as what, for the check.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The namespace indexes the server serves: every TypeDefinition must be in one.
    pub served: HashSet<u16>,
}

/// Check every instance below `roots` (namespace 0 nodes are not walked: the core server's).
/// Returns every violation found.
pub fn check(types: &Types<'_>, roots: &[(String, NodeId)], scope: &Scope) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut seen = HashSet::new();
    let mut queue: VecDeque<(String, NodeId)> = roots.iter().cloned().collect();
    while let Some((path, node)) = queue.pop_front() {
        if !seen.insert(node.clone()) {
            continue;
        }
        let Some(found) = types.find(&node) else {
            violations.push(Violation {
                path,
                node,
                problem: "referenced but does not exist".into(),
            });
            continue;
        };
        if !matches!(found, NodeType::Object(_) | NodeType::Variable(_)) {
            continue;
        }
        // InstanceDeclarations of the companion types hang below type nodes, not below
        // instances; one reached here would be a modelling error of ours.
        if types.rule(&node).is_some() {
            continue;
        }
        check_instance(types, &path, &node, scope, &mut violations);
        for reference_type in HIERARCHY {
            for child in types.targets(&node, reference_type, BrowseDirection::Forward) {
                if child.namespace == 0 || seen.contains(&child) {
                    continue;
                }
                let name = types
                    .find(&child)
                    .map(|c| c.as_node().browse_name().name.to_string())
                    .unwrap_or_default();
                queue.push_back((format!("{path}/{name}"), child));
            }
        }
    }
    violations
}

fn check_instance(
    types: &Types<'_>,
    path: &str,
    node: &NodeId,
    scope: &Scope,
    violations: &mut Vec<Violation>,
) {
    let mut fail = |problem: String| {
        violations.push(Violation {
            path: path.to_owned(),
            node: node.clone(),
            problem,
        })
    };
    let Some(type_id) = types.type_definition(node) else {
        fail("has no HasTypeDefinition".into());
        return;
    };
    if !scope.served.contains(&type_id.namespace) {
        fail(format!(
            "TypeDefinition {type_id} is in a namespace the server does not serve"
        ));
        return;
    }
    if types.find(&type_id).is_none() {
        fail(format!("TypeDefinition {type_id} does not resolve"));
        return;
    }
    let children: Vec<NodeId> = AGGREGATES
        .iter()
        .flat_map(|r| types.targets(node, *r, BrowseDirection::Forward))
        .collect();
    for declaration in types.declarations(&type_id) {
        if declaration.rule != Rule::Mandatory {
            continue;
        }
        let Some(expected) = types.find(&declaration.node) else {
            continue;
        };
        let name = &declaration.browse_name;
        let found = children
            .iter()
            .filter_map(|c| types.find(c))
            .find(|c| c.as_node().browse_name() == name);
        let Some(found) = found else {
            // The same name in another namespace: a client resolving the type's browse path
            // would not find it.
            let namesake = children
                .iter()
                .filter_map(|c| types.find(c))
                .find(|c| c.as_node().browse_name().name == name.name);
            if let Some(namesake) = namesake {
                fail(format!(
                    "mandatory `{}` of {type_id} is there as `{}`: its BrowseName is in another namespace",
                    name,
                    namesake.as_node().browse_name()
                ));
                continue;
            }
            fail(format!(
                "mandatory {} `{}` of {type_id} is missing",
                class_name(expected),
                name
            ));
            continue;
        };
        if found.node_class() != expected.node_class() {
            fail(format!(
                "`{name}` is a {} where the type declares a {}",
                class_name(found),
                class_name(expected)
            ));
            continue;
        }
        if let (NodeType::Variable(got), NodeType::Variable(want)) = (found, expected) {
            let (got, want) = (got.data_type(), want.data_type());
            if !types.is_subtype_of(&got, &want) {
                fail(format!(
                    "`{name}` has DataType {got} where the type declares {want}"
                ));
            }
        }
    }
}

fn class_name(node: &NodeType) -> &'static str {
    match node {
        NodeType::Object(_) => "Object",
        NodeType::Variable(_) => "Variable",
        NodeType::Method(_) => "Method",
        _ => "node",
    }
}
