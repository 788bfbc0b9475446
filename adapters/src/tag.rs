//! The tag catalogue: every tag the gateway knows, declared once at start-up.
//!
//! A tag is addressed on the bus by a dense [`TagId`], so that the bus, the OPC UA bridge and
//! the sinks can keep per-tag state in plain vectors instead of maps keyed by strings.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::point::Value;

/// Index of a tag in the [`TagCatalog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(pub u32);

impl TagId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of the adapter instance that owns a tag: writes to the tag are routed to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdapterId(pub u16);

/// How a tag is presented to clients. Values travel widened on the bus ([`Value`]); this is the
/// type the OPC UA variable declares and that writes are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Bool,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float32,
    Float64,
    String,
    DateTime,
}

impl DataType {
    /// Whether `value` can be stored in a tag of this type without loss.
    pub fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (DataType::Bool, Value::Bool(_)) => true,
            (DataType::Int16, Value::Int(i)) => i16::try_from(*i).is_ok(),
            (DataType::UInt16, Value::UInt(u)) => u16::try_from(*u).is_ok(),
            (DataType::Int32, Value::Int(i)) => i32::try_from(*i).is_ok(),
            (DataType::UInt32, Value::UInt(u)) => u32::try_from(*u).is_ok(),
            (DataType::Int64, Value::Int(_)) => true,
            (DataType::UInt64, Value::UInt(_)) => true,
            (DataType::Float32 | DataType::Float64, Value::Float(_)) => true,
            (DataType::String, Value::Text(_)) => true,
            (DataType::DateTime, Value::Time(_)) => true,
            _ => false,
        }
    }

    pub fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::String | DataType::DateTime)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            DataType::Bool => "bool",
            DataType::Int16 => "int16",
            DataType::UInt16 => "uint16",
            DataType::Int32 => "int32",
            DataType::UInt32 => "uint32",
            DataType::Int64 => "int64",
            DataType::UInt64 => "uint64",
            DataType::Float32 => "float32",
            DataType::Float64 => "float64",
            DataType::String => "string",
            DataType::DateTime => "datetime",
        };
        f.write_str(name)
    }
}

/// Whether clients may write a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    #[default]
    Read,
    ReadWrite,
}

/// Engineering range of an analog tag (OPC UA `EURange`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EuRange {
    pub low: f64,
    pub high: f64,
}

impl EuRange {
    pub fn contains(&self, x: f64) -> bool {
        x >= self.low && x <= self.high
    }
}

/// Everything the gateway knows about a tag before its first value.
#[derive(Debug, Clone, PartialEq)]
pub struct TagSpec {
    /// Browse path below the site object, segments joined by `/`,
    /// e.g. `Stations/Printing/Printer3D/NozzleTemperature` or `Line/Steps/Step4/State`.
    pub path: String,
    pub data_type: DataType,
    pub access: Access,
    /// Unit symbol as people write it (`°C`, `mm`, `rpm`); mapped to UNECE codes at the OPC UA edge.
    pub unit: Option<String>,
    pub range: Option<EuRange>,
    pub description: Option<String>,
    /// A fixed characteristic (a name, a position on the line) rather than a live measurement;
    /// OPC UA shows it as a property.
    pub property: bool,
}

impl TagSpec {
    pub fn new(path: impl Into<String>, data_type: DataType) -> Self {
        TagSpec {
            path: path.into(),
            data_type,
            access: Access::Read,
            unit: None,
            range: None,
            description: None,
            property: false,
        }
    }

    pub fn property(mut self) -> Self {
        self.property = true;
        self
    }

    pub fn writable(mut self) -> Self {
        self.access = Access::ReadWrite;
        self
    }

    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = Some(unit.to_owned());
        self
    }

    pub fn range(mut self, low: f64, high: f64) -> Self {
        self.range = Some(EuRange { low, high });
        self
    }

    pub fn describe(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }

    /// The tag's own name: the last path segment.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// The path of the object holding the tag.
    pub fn parent(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(parent, _)| parent)
    }
}

/// A tag as registered: its spec and the adapter that owns it.
#[derive(Debug, Clone)]
pub struct TagEntry {
    pub spec: TagSpec,
    pub owner: AdapterId,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("tag `{0}` is declared twice")]
    Duplicate(String),
    #[error("tag path `{0}` is not valid: segments must be non-empty and contain no `/`")]
    BadPath(String),
    #[error("more than {} tags", u32::MAX)]
    Full,
}

/// Collects tag declarations from every adapter before the bus starts.
#[derive(Debug, Default)]
pub struct TagCatalogBuilder {
    entries: Vec<TagEntry>,
    by_path: HashMap<String, TagId>,
}

impl TagCatalogBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, owner: AdapterId, spec: TagSpec) -> Result<TagId, CatalogError> {
        if spec.path.is_empty() || spec.path.split('/').any(str::is_empty) {
            return Err(CatalogError::BadPath(spec.path));
        }
        if self.by_path.contains_key(&spec.path) {
            return Err(CatalogError::Duplicate(spec.path));
        }
        let id = TagId(u32::try_from(self.entries.len()).map_err(|_| CatalogError::Full)?);
        self.by_path.insert(spec.path.clone(), id);
        self.entries.push(TagEntry { spec, owner });
        Ok(id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn spec(&self, id: TagId) -> Option<&TagSpec> {
        self.entries.get(id.index()).map(|e| &e.spec)
    }

    pub fn build(self) -> TagCatalog {
        TagCatalog {
            entries: self.entries,
            by_path: self.by_path,
        }
    }
}

/// The frozen set of tags, indexed by [`TagId`].
#[derive(Debug, Default)]
pub struct TagCatalog {
    entries: Vec<TagEntry>,
    by_path: HashMap<String, TagId>,
}

impl TagCatalog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: TagId) -> Option<&TagEntry> {
        self.entries.get(id.index())
    }

    pub fn lookup(&self, path: &str) -> Option<TagId> {
        self.by_path.get(path).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (TagId, &TagEntry)> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| (TagId(i as u32), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_and_malformed_paths_are_refused() {
        let mut b = TagCatalogBuilder::new();
        let owner = AdapterId(0);
        let a = b.register(owner, TagSpec::new("Line/State", DataType::String));
        assert_eq!(a, Ok(TagId(0)));
        assert_eq!(
            b.register(owner, TagSpec::new("Line/State", DataType::String)),
            Err(CatalogError::Duplicate("Line/State".into()))
        );
        assert!(matches!(
            b.register(owner, TagSpec::new("Line//State", DataType::String)),
            Err(CatalogError::BadPath(_))
        ));
        let catalog = b.build();
        assert_eq!(catalog.lookup("Line/State"), Some(TagId(0)));
        assert_eq!(catalog.len(), 1);
    }

    #[test]
    fn data_types_refuse_values_they_cannot_hold() {
        assert!(DataType::Int16.accepts(&Value::Int(-32768)));
        assert!(!DataType::Int16.accepts(&Value::Int(40000)));
        assert!(!DataType::UInt32.accepts(&Value::Int(5)));
        assert!(DataType::Float32.accepts(&Value::Float(1.5)));
        assert!(!DataType::String.accepts(&Value::Bool(true)));
    }

    #[test]
    fn name_and_parent_split_on_the_last_segment() {
        let spec = TagSpec::new("Stations/Printing/Printer3D/Nozzle", DataType::Float64);
        assert_eq!(spec.name(), "Nozzle");
        assert_eq!(spec.parent(), "Stations/Printing/Printer3D");
    }
}
