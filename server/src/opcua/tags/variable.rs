//! What a tag variable is, attribute by attribute: one definition for both ways of serving
//! tags (nodes in the in-memory address space, or the tag node manager that builds a node only
//! for the request that needs it), so both answer the same.

use fabrique_adapters::{Access, TagSpec};
use opcua::nodes::{AccessLevel, Variable, VariableBuilder};
use opcua::types::{
    DataTypeId, ExtensionObject, LocalizedText, NodeId, QualifiedName, Range, VariableTypeId,
    Variant,
};

use super::super::address_space::instance_node_id;
use super::super::convert::engineering_units;
use fabrique_adapters::ua::data_type_id;

/// The standard properties a tag variable may have (OPC 10000-8), browse names in namespace 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    EngineeringUnits,
    EURange,
}

impl Property {
    pub const ALL: [Property; 2] = [Property::EngineeringUnits, Property::EURange];

    pub fn name(self) -> &'static str {
        match self {
            Property::EngineeringUnits => "EngineeringUnits",
            Property::EURange => "EURange",
        }
    }

    pub fn from_name(name: &str) -> Option<Property> {
        Property::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether a tag of this spec has the property.
    pub fn applies_to(self, spec: &TagSpec) -> bool {
        match self {
            Property::EngineeringUnits => spec.unit.is_some(),
            Property::EURange => spec.range.is_some(),
        }
    }

    pub fn node_id(self, ns: u16, owner_path: &str) -> NodeId {
        instance_node_id(ns, &format!("{owner_path}/{}", self.name()))
    }
}

/// The variable's type definition, from what the spec declares.
pub fn type_definition(spec: &TagSpec) -> VariableTypeId {
    let analog = spec.data_type.is_numeric() && (spec.unit.is_some() || spec.range.is_some());
    if spec.property {
        VariableTypeId::PropertyType
    } else if analog && spec.range.is_some() {
        VariableTypeId::AnalogItemType
    } else if analog {
        // AnalogItemType makes EURange mandatory; a unit without a range is a BaseAnalogType.
        VariableTypeId::BaseAnalogType
    } else {
        VariableTypeId::BaseDataVariableType
    }
}

pub fn access_level(spec: &TagSpec, historized: bool) -> AccessLevel {
    let access = match spec.access {
        Access::Read => AccessLevel::CURRENT_READ,
        Access::ReadWrite => AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE,
    };
    if historized {
        access | AccessLevel::HISTORY_READ
    } else {
        access
    }
}

/// The tag's variable, without its references (the caller adds the parent's); its
/// BrowseName in namespace `name_ns` (`address_space::browse_namespace`).
pub fn builder(ns: u16, name_ns: u16, spec: &TagSpec) -> VariableBuilder {
    let id = instance_node_id(ns, &spec.path);
    let name = spec.name();
    let access = access_level(spec, false);
    let builder = VariableBuilder::new(&id, QualifiedName::new(name_ns, name), name)
        .data_type(data_type_id(spec.data_type))
        .value_rank(-1)
        .access_level(access)
        .user_access_level(access)
        .minimum_sampling_interval(0.0)
        .has_type_definition(type_definition(spec));
    match &spec.description {
        Some(text) => builder.description(LocalizedText::new("en", text)),
        None => builder,
    }
}

/// The variable as a node of its own, for answering one request (attributes, write checks).
pub fn variable(ns: u16, name_ns: u16, spec: &TagSpec, historized: bool) -> Variable {
    let mut variable = builder(ns, name_ns, spec).build();
    if historized {
        variable.set_historizing(true);
        let access = access_level(spec, true);
        variable.set_access_level(access);
        variable.set_user_access_level(access);
    }
    variable
}

/// A standard property of the tag, without its reference to the tag; `None` when the tag has
/// no such property.
pub fn property_builder(ns: u16, spec: &TagSpec, property: Property) -> Option<VariableBuilder> {
    let (value, data_type) = match property {
        Property::EngineeringUnits => {
            let eu = ExtensionObject::from_message(engineering_units(spec.unit.as_ref()?));
            (Variant::ExtensionObject(eu), DataTypeId::EUInformation)
        }
        Property::EURange => {
            let range = spec.range?;
            let range = ExtensionObject::from_message(Range {
                low: range.low,
                high: range.high,
            });
            (Variant::ExtensionObject(range), DataTypeId::Range)
        }
    };
    let id = property.node_id(ns, &spec.path);
    let name = property.name();
    Some(
        VariableBuilder::new(&id, QualifiedName::new(0, name), name)
            .data_type(data_type)
            .value_rank(-1)
            .value(value)
            .access_level(AccessLevel::CURRENT_READ)
            .user_access_level(AccessLevel::CURRENT_READ)
            .has_type_definition(VariableTypeId::PropertyType),
    )
}

/// The value a Write asks of tag `tag`, checked as every tag variable is (the in-memory path and
/// the tag node manager alike): only the Value attribute, whole, of the tag's type.
pub fn value_to_write(
    catalog: &fabrique_adapters::TagCatalog,
    tag: fabrique_adapters::TagId,
    write: &opcua::server::node_manager::ParsedWriteValue,
) -> Result<fabrique_adapters::Value, opcua::types::StatusCode> {
    use opcua::types::{AttributeId, StatusCode, Variant};
    if write.attribute_id != AttributeId::Value {
        return Err(StatusCode::BadNotWritable);
    }
    if write.index_range.has_range() {
        return Err(StatusCode::BadWriteNotSupported);
    }
    let entry = catalog.get(tag).ok_or(StatusCode::BadNodeIdUnknown)?;
    let written = write.value.value.as_ref().unwrap_or(&Variant::Empty);
    fabrique_adapters::ua::value_of(entry.spec.data_type, written)
        .ok_or(StatusCode::BadTypeMismatch)
}
