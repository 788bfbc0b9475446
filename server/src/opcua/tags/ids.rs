//! From a NodeId to the tag it shows, and back: NodeIds stay the strings of the browse path
//! (`Fabrique/<tag path>`, `Fabrique/<tag path>/EURange`); inside, a tag is its `TagId`.

use std::collections::HashMap;
use std::sync::Arc;

use fabrique_adapters::{TagCatalog, TagId};
use opcua::sync::RwLock;
use opcua::types::{Identifier, NodeId};

use super::super::address_space::ROOT;
use super::variable::Property;

/// A node the tag node manager answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagNode {
    Variable(TagId),
    Property(TagId, Property),
}

impl TagNode {
    pub fn tag(self) -> TagId {
        match self {
            TagNode::Variable(tag) | TagNode::Property(tag, _) => tag,
        }
    }
}

/// The path below the site object that a NodeId of namespace `ns` names: `Some("")` for the
/// site object itself, `None` for a NodeId that is not one of the instance paths.
pub fn path_of(ns: u16, id: &NodeId) -> Option<&str> {
    if id.namespace != ns {
        return None;
    }
    let Identifier::String(s) = &id.identifier else {
        return None;
    };
    let s = s.as_ref();
    let rest = s.strip_prefix(ROOT)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('/')
}

/// The tag node `id` names, if that tag (or property) exists in `catalog`.
pub fn parse(ns: u16, catalog: &TagCatalog, id: &NodeId) -> Option<TagNode> {
    let path = path_of(ns, id)?;
    if let Some(tag) = catalog.lookup(path).filter(|t| catalog.get(*t).is_some()) {
        return Some(TagNode::Variable(tag));
    }
    let (owner, name) = path.rsplit_once('/')?;
    let property = Property::from_name(name)?;
    let tag = catalog.lookup(owner)?;
    let entry = catalog.get(tag)?;
    property
        .applies_to(&entry.spec)
        .then_some(TagNode::Property(tag, property))
}

/// Each object's tags (by the object's path, `""` for the site), for Browse and
/// TranslateBrowsePaths from the objects the in-memory address space holds. Rebuilt when the
/// catalogue changes (a reload), which costs one pass over it.
#[derive(Default)]
pub struct Children {
    /// The catalogue the index was built from, and the index.
    cached: RwLock<Option<(Arc<TagCatalog>, ChildIndex)>>,
}

/// Object path → the tags directly below it.
pub type ChildIndex = Arc<HashMap<String, Vec<TagId>>>;

impl Children {
    pub fn of(&self, catalog: &Arc<TagCatalog>) -> ChildIndex {
        if let Some((seen, children)) = &*self.cached.read() {
            if Arc::ptr_eq(seen, catalog) {
                return children.clone();
            }
        }
        let mut children: HashMap<String, Vec<TagId>> = HashMap::new();
        for (tag, entry) in catalog.iter() {
            children
                .entry(entry.spec.parent().to_owned())
                .or_default()
                .push(tag);
        }
        let children = Arc::new(children);
        *self.cached.write() = Some((catalog.clone(), children.clone()));
        children
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabrique_adapters::{AdapterId, DataType, TagCatalogBuilder, TagSpec};

    fn catalog() -> (Arc<TagCatalog>, TagId, TagId) {
        let mut b = TagCatalogBuilder::new();
        let nozzle = TagSpec::new("Stations/P/Printer/Nozzle", DataType::Float64)
            .unit("°C")
            .range(0.0, 300.0);
        let nozzle = b.register(AdapterId(0), nozzle).unwrap();
        let name = TagSpec::new("Name2", DataType::String).property();
        let name = b.register(AdapterId(0), name).unwrap();
        (Arc::new(b.build()), nozzle, name)
    }

    #[test]
    fn node_ids_name_tags_and_their_properties() {
        let (catalog, nozzle, name) = catalog();
        let id = |s: &str| NodeId::new(3, s);
        let parse = |s: &str| parse(3, &catalog, &id(s));
        assert_eq!(
            parse("Fabrique/Stations/P/Printer/Nozzle"),
            Some(TagNode::Variable(nozzle))
        );
        assert_eq!(parse("Fabrique/Name2"), Some(TagNode::Variable(name)));
        assert_eq!(
            parse("Fabrique/Stations/P/Printer/Nozzle/EURange"),
            Some(TagNode::Property(nozzle, Property::EURange))
        );
        // A property the tag does not have, an object, another namespace: not a tag node.
        assert_eq!(parse("Fabrique/Name2/EngineeringUnits"), None);
        assert_eq!(parse("Fabrique/Stations/P/Printer"), None);
        assert_eq!(parse("Fabrique"), None);
        assert_eq!(ids_in_other_namespace(&catalog), None);
        assert_eq!(path_of(3, &id("Fabrique")), Some(""));
        assert_eq!(path_of(3, &id("FabriqueX/Y")), None);
        assert_eq!(path_of(3, &id("Fabrique/Line")), Some("Line"));
    }

    fn ids_in_other_namespace(catalog: &TagCatalog) -> Option<TagNode> {
        parse(4, catalog, &NodeId::new(3, "Fabrique/Name2"))
    }

    #[test]
    fn children_are_indexed_by_parent_and_rebuilt_for_a_new_catalogue() {
        let (catalog, nozzle, name) = catalog();
        let children = Children::default();
        let index = children.of(&catalog);
        assert_eq!(index.get("Stations/P/Printer"), Some(&vec![nozzle]));
        assert_eq!(index.get(""), Some(&vec![name]));
        assert!(Arc::ptr_eq(&index, &children.of(&catalog)));
        let (other, _, _) = self::catalog();
        assert!(!Arc::ptr_eq(&index, &children.of(&other)));
    }
}
