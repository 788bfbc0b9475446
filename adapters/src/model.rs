//! The objects and methods an adapter declares next to its tags.
//!
//! Tags say what values exist; this says what the objects holding them *are* (a production
//! step, a device, a folder of orders) and what can be asked of them (methods with typed
//! arguments). The adapter that owns the knowledge declares it through its
//! [`crate::TagRegistrar`], and the OPC UA layer renders exactly what it is told: it never
//! guesses a type from a path.

use std::fmt;

use crate::tag::DataType;

/// The gateway's own object types, as numbered in `nodesets/Fabrique.NodeSet2.xml`
/// (namespace `urn:fabrique-gateway:types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FabriqueType {
    Site,
    Line,
    ProductionStep,
    Station,
    Device,
    Order,
    Indicators,
    Visits,
    DeviceStatus,
    Orders,
    Stop,
    Survey,
    Machine,
    FieldDevice,
    Kiosk,
}

impl FabriqueType {
    /// Every type, in NodeSet order.
    pub const ALL: [FabriqueType; 15] = [
        FabriqueType::Site,
        FabriqueType::Line,
        FabriqueType::ProductionStep,
        FabriqueType::Station,
        FabriqueType::Device,
        FabriqueType::Order,
        FabriqueType::Indicators,
        FabriqueType::Visits,
        FabriqueType::DeviceStatus,
        FabriqueType::Orders,
        FabriqueType::Stop,
        FabriqueType::Survey,
        FabriqueType::Machine,
        FabriqueType::FieldDevice,
        FabriqueType::Kiosk,
    ];

    /// The numeric NodeId of the type in the types namespace.
    pub const fn id(self) -> u32 {
        match self {
            FabriqueType::Site => 1001,
            FabriqueType::Line => 1002,
            FabriqueType::ProductionStep => 1003,
            FabriqueType::Station => 1004,
            FabriqueType::Device => 1005,
            FabriqueType::Order => 1006,
            FabriqueType::Indicators => 1007,
            FabriqueType::Visits => 1008,
            FabriqueType::DeviceStatus => 1009,
            FabriqueType::Orders => 1010,
            FabriqueType::Stop => 1011,
            FabriqueType::Survey => 1012,
            FabriqueType::Machine => 1013,
            FabriqueType::FieldDevice => 1014,
            FabriqueType::Kiosk => 1015,
        }
    }

    /// The type's browse name in the NodeSet (without its namespace).
    pub const fn browse_name(self) -> &'static str {
        match self {
            FabriqueType::Site => "SiteType",
            FabriqueType::Line => "LineType",
            FabriqueType::ProductionStep => "ProductionStepType",
            FabriqueType::Station => "StationType",
            FabriqueType::Device => "DeviceType",
            FabriqueType::Order => "OrderType",
            FabriqueType::Indicators => "IndicatorsType",
            FabriqueType::Visits => "VisitsType",
            FabriqueType::DeviceStatus => "DeviceStatusType",
            FabriqueType::Orders => "OrdersType",
            FabriqueType::Stop => "StopType",
            FabriqueType::Survey => "SurveyType",
            FabriqueType::Machine => "MachineType",
            FabriqueType::FieldDevice => "FieldDeviceType",
            FabriqueType::Kiosk => "KioskType",
        }
    }
}

impl FabriqueType {
    /// The children the type declares (its InstanceDeclarations in
    /// `nodesets/Fabrique.NodeSet2.xml`; a server test checks the two agree). An instance's
    /// child of one of these names carries the types namespace in its BrowseName, as declared,
    /// so a browse path resolved from the type finds it.
    pub const fn declared_children(self) -> &'static [&'static str] {
        match self {
            FabriqueType::Site => &["Name"],
            FabriqueType::Line => &[
                "State",
                "Mode",
                "Models",
                "OrdersQueued",
                "OrdersInProgress",
                "PartsDelivered",
                "PartsScrapped",
            ],
            FabriqueType::ProductionStep => &[
                "Number",
                "Name",
                "State",
                "CurrentOrder",
                "Progress",
                "LastCycleTime",
                "Count",
            ],
            FabriqueType::Device => &[
                "Manufacturer",
                "Model",
                "SerialNumber",
                "Protocol",
                "Status",
            ],
            FabriqueType::Order => &[
                "Id",
                "Model",
                "Text",
                "State",
                "Verdict",
                "Step",
                "SubmittedAt",
                "CompletedAt",
            ],
            FabriqueType::Visits => &[
                "VisitorsTotal",
                "VisitorsAtStop",
                "VisitorsToday",
                "GroupsTotal",
                "Survey",
            ],
            FabriqueType::DeviceStatus => &[
                "Connected",
                "LastError",
                "Reconnects",
                "LastReadTime",
                "RequestsOk",
                "RequestsFailed",
            ],
            FabriqueType::Stop => &["Town", "Venue", "FirstDay", "LastDay"],
            FabriqueType::Survey => &[
                "Responses",
                "SatisfiedPct",
                "ViewChangedPct",
                "ResponsesAtStop",
                "Rejected",
            ],
            FabriqueType::Kiosk => &[
                "Scans",
                "Launched",
                "Rejected",
                "LastScan",
                "LastCode",
                "LastResult",
                "DesignsCreated",
                "DesignsRefused",
            ],
            FabriqueType::Station
            | FabriqueType::Indicators
            | FabriqueType::Orders
            | FabriqueType::Machine
            | FabriqueType::FieldDevice => &[],
        }
    }

    /// Whether the type declares a child `name`.
    pub fn declares(self, name: &str) -> bool {
        self.declared_children().contains(&name)
    }
}

/// What an object is: its TypeDefinition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// OPC UA `FolderType`: its children are organised (`Organizes`), not components.
    Folder,
    /// OPC UA `BaseObjectType`: what an object nobody declared is.
    BaseObject,
    /// One of the gateway's own types.
    Fabrique(FabriqueType),
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectType::Folder => f.write_str("FolderType"),
            ObjectType::BaseObject => f.write_str("BaseObjectType"),
            ObjectType::Fabrique(t) => f.write_str(t.browse_name()),
        }
    }
}

impl From<FabriqueType> for ObjectType {
    fn from(t: FabriqueType) -> Self {
        ObjectType::Fabrique(t)
    }
}

/// An object at `path` (below the site object, like a tag path) and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    pub path: String,
    pub object_type: ObjectType,
}

impl ObjectSpec {
    pub fn new(path: impl Into<String>, object_type: impl Into<ObjectType>) -> Self {
        ObjectSpec {
            path: path.into(),
            object_type: object_type.into(),
        }
    }
}

/// One input or output argument of a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentSpec {
    pub name: String,
    pub data_type: DataType,
    pub description: Option<String>,
}

impl ArgumentSpec {
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        ArgumentSpec {
            name: name.into(),
            data_type,
            description: None,
        }
    }

    pub fn string(name: impl Into<String>) -> Self {
        ArgumentSpec::new(name, DataType::String)
    }

    pub fn describe(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }
}

/// A method on the object at `object`, served by the adapter that declares it: calls reach
/// that adapter as a [`crate::CallRequest`] whose `method` is [`MethodSpec::path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodSpec {
    pub object: String,
    pub name: String,
    pub description: String,
    pub inputs: Vec<ArgumentSpec>,
    pub outputs: Vec<ArgumentSpec>,
}

impl MethodSpec {
    pub fn new(object: impl Into<String>, name: impl Into<String>, description: &str) -> Self {
        MethodSpec {
            object: object.into(),
            name: name.into(),
            description: description.to_owned(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    pub fn input(mut self, argument: ArgumentSpec) -> Self {
        self.inputs.push(argument);
        self
    }

    pub fn output(mut self, argument: ArgumentSpec) -> Self {
        self.outputs.push(argument);
        self
    }

    /// `<object>/<name>`: the method's NodeId path and the name its adapter knows it by.
    pub fn path(&self) -> String {
        format!("{}/{}", self.object, self.name)
    }
}

/// Whether `path` is a valid object path: non-empty segments, no empty path.
pub(crate) fn valid_path(path: &str) -> bool {
    !path.is_empty() && !path.split('/').any(str::is_empty)
}
