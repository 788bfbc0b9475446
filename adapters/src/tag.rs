//! The tag catalogue: every tag the gateway knows, declared once at start-up.
//!
//! A tag is addressed on the bus by a dense [`TagId`], so that the bus, the OPC UA bridge and
//! the sinks can keep per-tag state in plain vectors instead of maps keyed by strings.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

mod path_index;

use crate::model::{valid_path, MethodSpec, ObjectSpec, ObjectType};
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
    /// Limits of an `ExclusiveLimitAlarmType` condition on this tag (server/src/alarms/limit.rs).
    /// Boxed: few tags have one, and inline they were half of every catalogue entry (about
    /// 100 of 210 bytes, 10 MB at 100,000 tags).
    pub alarm: Option<Box<crate::limits::AlarmLimits>>,
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
            alarm: None,
        }
    }

    pub fn property(mut self) -> Self {
        self.property = true;
        self
    }

    pub fn alarm(mut self, limits: crate::limits::AlarmLimits) -> Self {
        self.alarm = Some(Box::new(limits));
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
    #[error("object `{path}` is declared as {first} and again as {again}")]
    ObjectTypeConflict {
        path: String,
        first: ObjectType,
        again: ObjectType,
    },
    #[error("method `{0}` is declared twice")]
    DuplicateMethod(String),
}

/// Collects tag declarations from every adapter before the bus starts, or, when the
/// configuration is reloaded, grows a running catalogue ([`TagCatalogBuilder::from_catalog`]).
///
/// Ids are append-only: a tag that goes away leaves a tombstone and its [`TagId`] is never
/// given to another tag, so per-tag state kept by consumers (the bus's latest table, the OPC UA
/// node of each tag, sink labels) can never be confused. A retired tag declared again with the
/// same path and data type gets its old id back: a device whose configuration changed keeps
/// the monitored items that clients hold on its unchanged tags.
#[derive(Debug, Default, Clone)]
pub struct TagCatalogBuilder {
    slots: Slots,
    /// Ids handed out by this builder, in registration order (fresh or revived).
    registered: Vec<TagId>,
}

/// The storage shared by the builder and the catalogue.
#[derive(Debug, Default, Clone)]
struct Slots {
    /// One slot per id ever handed out; `None` for a retired tag.
    entries: Vec<Option<TagEntry>>,
    /// Live tags by path (the paths are the entries').
    by_path: path_index::PathIndex,
    /// Retired tags by path, with their type, so a same-typed return gets the same id.
    retired: HashMap<String, (TagId, DataType)>,
    /// Declared objects by path (sorted, so a parent comes before its children).
    objects: BTreeMap<String, DeclaredObject>,
    /// Declared methods by `<object>/<name>`, with the adapter that serves them.
    methods: BTreeMap<String, (AdapterId, MethodSpec)>,
}

/// An object's type and the adapters that declared it (a station holds several devices, each
/// declaring it); it goes when the last of them retires.
#[derive(Debug, Clone)]
struct DeclaredObject {
    object_type: ObjectType,
    owners: Vec<AdapterId>,
}

impl TagCatalogBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder that continues `catalog`: same ids, same tombstones, new ids after them.
    pub fn from_catalog(catalog: &TagCatalog) -> Self {
        TagCatalogBuilder {
            slots: catalog.slots.clone(),
            registered: Vec::new(),
        }
    }

    pub fn register(&mut self, owner: AdapterId, spec: TagSpec) -> Result<TagId, CatalogError> {
        if spec.path.is_empty() || spec.path.split('/').any(str::is_empty) {
            return Err(CatalogError::BadPath(spec.path));
        }
        let slots = &mut self.slots;
        if slots.by_path.get(&slots.entries, &spec.path).is_some() {
            return Err(CatalogError::Duplicate(spec.path));
        }
        let id = match slots.retired.remove(&spec.path) {
            Some((id, data_type)) if data_type == spec.data_type => id,
            // A different type is a different tag for clients: a new id, the old one stays dead.
            _ => {
                let id = TagId(u32::try_from(slots.entries.len()).map_err(|_| CatalogError::Full)?);
                slots.entries.push(None);
                id
            }
        };
        slots.entries[id.index()] = Some(TagEntry { spec, owner });
        slots.by_path.insert(&slots.entries, id);
        self.registered.push(id);
        Ok(id)
    }

    /// Declare what the object at `spec.path` is. Several adapters may declare the same
    /// object with the same type; a different type is refused.
    pub fn declare_object(
        &mut self,
        owner: AdapterId,
        spec: ObjectSpec,
    ) -> Result<(), CatalogError> {
        if !valid_path(&spec.path) {
            return Err(CatalogError::BadPath(spec.path));
        }
        let declared = self.slots.objects.entry(spec.path.clone());
        let object = declared.or_insert_with(|| DeclaredObject {
            object_type: spec.object_type,
            owners: Vec::new(),
        });
        if object.object_type != spec.object_type {
            return Err(CatalogError::ObjectTypeConflict {
                path: spec.path,
                first: object.object_type,
                again: spec.object_type,
            });
        }
        if !object.owners.contains(&owner) {
            object.owners.push(owner);
        }
        Ok(())
    }

    /// Declare a method that `owner` serves.
    pub fn declare_method(
        &mut self,
        owner: AdapterId,
        spec: MethodSpec,
    ) -> Result<(), CatalogError> {
        let path = spec.path();
        if !valid_path(&spec.object) || !valid_path(&spec.name) || spec.name.contains('/') {
            return Err(CatalogError::BadPath(path));
        }
        if self.slots.methods.contains_key(&path) {
            return Err(CatalogError::DuplicateMethod(path));
        }
        self.slots.methods.insert(path, (owner, spec));
        Ok(())
    }

    /// Retire every tag `owner` declared; returns their ids. Their ids are never reused for
    /// another tag. Its methods go too, and the objects no other adapter declared.
    pub fn retire_owner(&mut self, owner: AdapterId) -> Vec<TagId> {
        let slots = &mut self.slots;
        slots.methods.retain(|_, (o, _)| *o != owner);
        slots.objects.retain(|_, object| {
            object.owners.retain(|o| *o != owner);
            !object.owners.is_empty()
        });
        let mut retired = Vec::new();
        for (i, slot) in slots.entries.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|e| e.owner == owner) {
                if let Some(entry) = slot.take() {
                    let id = TagId(i as u32);
                    slots.by_path.remove(&entry.spec.path, id);
                    slots
                        .retired
                        .insert(entry.spec.path, (id, entry.spec.data_type));
                    retired.push(id);
                }
            }
        }
        retired
    }

    /// Ids handed out so far, tombstones included: the size of any per-id table.
    pub fn len(&self) -> usize {
        self.slots.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.entries.is_empty()
    }

    /// Ids registered through this builder, in order (a revived id included).
    pub fn registered(&self) -> &[TagId] {
        &self.registered
    }

    pub fn spec(&self, id: TagId) -> Option<&TagSpec> {
        self.slots.get(id).map(|e| &e.spec)
    }

    /// Give a live tag new alarm limits (`None`: none), keeping its id: a reload applies the
    /// limits of simulated machines this way, without restarting the simulator. Returns
    /// whether they changed (false too for an unknown or retired tag).
    pub fn set_alarm(&mut self, id: TagId, alarm: Option<crate::limits::AlarmLimits>) -> bool {
        match self
            .slots
            .entries
            .get_mut(id.index())
            .and_then(Option::as_mut)
        {
            Some(entry) if entry.spec.alarm.as_deref() != alarm.as_ref() => {
                entry.spec.alarm = alarm.map(Box::new);
                true
            }
            _ => false,
        }
    }

    pub fn build(mut self) -> TagCatalog {
        // Registration grew the table by doubling; a catalogue is frozen, so the unused
        // capacity (up to half the table) is given back.
        self.slots.entries.shrink_to_fit();
        TagCatalog { slots: self.slots }
    }
}

impl Slots {
    fn get(&self, id: TagId) -> Option<&TagEntry> {
        self.entries.get(id.index()).and_then(Option::as_ref)
    }
}

/// The frozen set of tags, indexed by [`TagId`]. Retired tags are tombstones: `get` and
/// `lookup` do not find them and `iter` skips them, but their ids still count in `len`.
#[derive(Debug, Default)]
pub struct TagCatalog {
    slots: Slots,
}

impl TagCatalog {
    /// Ids handed out, tombstones included: the size of any table indexed by [`TagId`].
    pub fn len(&self) -> usize {
        self.slots.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.entries.is_empty()
    }

    /// Tags alive (not retired).
    pub fn live(&self) -> usize {
        self.slots.by_path.len()
    }

    pub fn get(&self, id: TagId) -> Option<&TagEntry> {
        self.slots.get(id)
    }

    pub fn lookup(&self, path: &str) -> Option<TagId> {
        self.slots.by_path.get(&self.slots.entries, path)
    }

    /// The declared type of the object at `path`; `None` when no adapter declared it.
    pub fn object_type(&self, path: &str) -> Option<ObjectType> {
        self.slots.objects.get(path).map(|o| o.object_type)
    }

    /// Whether the node at `path` (a tag or an object) is a child that its parent's Fabrique
    /// type declares: its BrowseName is then in the types namespace, as declared.
    pub fn declared_by_parent(&self, path: &str) -> bool {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent_type = if parent.is_empty() && !path.is_empty() {
            // Children of the site object itself.
            Some(ObjectType::Fabrique(crate::model::FabriqueType::Site))
        } else {
            self.object_type(parent)
        };
        matches!(parent_type, Some(ObjectType::Fabrique(t)) if t.declares(name))
    }

    /// Declared objects, a parent before its children.
    pub fn objects(&self) -> impl Iterator<Item = ObjectSpec> + '_ {
        self.slots
            .objects
            .iter()
            .map(|(path, o)| ObjectSpec::new(path.clone(), o.object_type))
    }

    /// Declared methods with the adapter that serves each.
    pub fn methods(&self) -> impl Iterator<Item = (AdapterId, &MethodSpec)> {
        self.slots
            .methods
            .values()
            .map(|(owner, spec)| (*owner, spec))
    }

    /// The method at `<object>/<name>` and its adapter.
    pub fn method(&self, path: &str) -> Option<(AdapterId, &MethodSpec)> {
        self.slots
            .methods
            .get(path)
            .map(|(owner, spec)| (*owner, spec))
    }

    /// Live tags in id order.
    pub fn iter(&self) -> impl Iterator<Item = (TagId, &TagEntry)> {
        self.slots
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((TagId(i as u32), e.as_ref()?)))
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
    fn a_grown_catalogue_keeps_ids_and_never_reuses_a_retired_one() {
        let (a, b) = (AdapterId(0), AdapterId(1));
        let mut first = TagCatalogBuilder::new();
        let kept = first
            .register(a, TagSpec::new("A/X", DataType::Float64))
            .unwrap();
        let same = first
            .register(b, TagSpec::new("B/Same", DataType::Float64))
            .unwrap();
        let retyped = first
            .register(b, TagSpec::new("B/Retyped", DataType::Int32))
            .unwrap();
        let gone = first
            .register(b, TagSpec::new("B/Gone", DataType::Bool))
            .unwrap();
        let catalog = first.build();

        // Device B changes: its tags retire, then its new version declares them again.
        let mut grown = TagCatalogBuilder::from_catalog(&catalog);
        assert_eq!(grown.retire_owner(b), vec![same, retyped, gone]);
        let c = AdapterId(2);
        let revived = grown
            .register(c, TagSpec::new("B/Same", DataType::Float64))
            .unwrap();
        let new_type = grown
            .register(c, TagSpec::new("B/Retyped", DataType::String))
            .unwrap();
        let added = grown
            .register(c, TagSpec::new("B/New", DataType::Bool))
            .unwrap();
        assert_eq!(grown.registered(), &[revived, new_type, added]);
        let grown = grown.build();

        assert_eq!(revived, same, "same path and type: same id");
        assert_eq!(grown.get(same).map(|e| e.owner), Some(c));
        assert_eq!(new_type, TagId(4), "a new type is a new tag");
        assert_eq!(added, TagId(5));
        assert!(grown.get(retyped).is_none(), "the old id stays a tombstone");
        assert!(grown.get(gone).is_none());
        assert_eq!(grown.lookup("B/Gone"), None);
        assert_eq!(grown.lookup("A/X"), Some(kept));
        assert_eq!((grown.len(), grown.live()), (6, 4));
        let live: Vec<TagId> = grown.iter().map(|(id, _)| id).collect();
        assert_eq!(live, vec![kept, same, new_type, added]);
        // The running catalogue is untouched until the new one replaces it.
        assert_eq!(catalog.lookup("B/Gone"), Some(gone));
    }

    #[test]
    fn objects_and_methods_are_declared_by_their_owner_and_retire_with_it() {
        use crate::model::{ArgumentSpec, FabriqueType, MethodSpec, ObjectSpec, ObjectType};
        let (line, kiosk) = (AdapterId(0), AdapterId(1));
        let mut b = TagCatalogBuilder::new();
        let orders = |t: FabriqueType| ObjectSpec::new("Orders", t);
        b.declare_object(line, orders(FabriqueType::Orders))
            .unwrap();
        // Another adapter may declare the same object as the same type, never as another.
        b.declare_object(kiosk, orders(FabriqueType::Orders))
            .unwrap();
        assert_eq!(
            b.declare_object(kiosk, orders(FabriqueType::Line)),
            Err(CatalogError::ObjectTypeConflict {
                path: "Orders".into(),
                first: ObjectType::Fabrique(FabriqueType::Orders),
                again: ObjectType::Fabrique(FabriqueType::Line),
            })
        );
        let recent = ObjectSpec::new("Orders/Recent", ObjectType::Folder);
        b.declare_object(line, recent).unwrap();
        let bad = ObjectSpec::new("Orders//Recent", ObjectType::Folder);
        assert!(matches!(
            b.declare_object(line, bad),
            Err(CatalogError::BadPath(_))
        ));
        let find = MethodSpec::new("Orders", "FindOrder", "Any order by id")
            .input(ArgumentSpec::string("OrderId"))
            .output(ArgumentSpec::new("Step", DataType::UInt16));
        b.declare_method(kiosk, find.clone()).unwrap();
        assert_eq!(
            b.declare_method(line, find.clone()),
            Err(CatalogError::DuplicateMethod("Orders/FindOrder".into()))
        );
        let catalog = b.build();
        assert_eq!(
            catalog.object_type("Orders"),
            Some(ObjectType::Fabrique(FabriqueType::Orders))
        );
        assert_eq!(catalog.object_type("Nowhere"), None);
        let paths: Vec<String> = catalog.objects().map(|o| o.path).collect();
        assert_eq!(paths, ["Orders", "Orders/Recent"], "a parent first");
        assert_eq!(catalog.method("Orders/FindOrder"), Some((kiosk, &find)));
        assert_eq!(catalog.methods().count(), 1);

        // The kiosk goes: its method with it; `Orders` stays, the line still declares it.
        let mut grown = TagCatalogBuilder::from_catalog(&catalog);
        grown.retire_owner(kiosk);
        let grown = grown.build();
        assert_eq!(grown.method("Orders/FindOrder"), None);
        assert!(grown.object_type("Orders").is_some());
        // Then the line: nobody declares `Orders` any more.
        let mut gone = TagCatalogBuilder::from_catalog(&grown);
        gone.retire_owner(line);
        assert_eq!(gone.build().objects().count(), 0);
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
