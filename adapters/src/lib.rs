//! Southbound side of Fabrique Gateway.
//!
//! Everything a device adapter needs and nothing more: the point model ([`point`]), the tag
//! catalogue ([`tag`]), the point bus every consumer reads ([`bus`]), the [`Adapter`] trait with
//! the commands that flow back to devices ([`adapter`]), and one module per protocol.
//!
//! A partner who writes an adapter in Rust depends on this crate only.

pub mod adapter;
pub mod backoff;
pub mod block;
pub mod bus;
pub mod device;
pub mod limits;
pub mod line;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod net;
pub mod octoprint;
pub mod opcua_client;
pub mod point;
pub mod registry;
pub mod simulator;
pub mod tag;
pub mod text;
pub mod ua;

pub use adapter::{
    Adapter, AdapterContext, CallError, CallRequest, Command, DeviceStatus, TagRegistrar,
    WriteError, WriteRequest,
};
pub use bus::{BusReceiver, PointBus, Publisher};
pub use model::{ArgumentSpec, FabriqueType, MethodSpec, ObjectSpec, ObjectType};
pub use point::{Point, PointUpdate, Quality, Timestamp, Value};
pub use registry::DeviceConfig;
pub use tag::{
    Access, AdapterId, CatalogError, DataType, EuRange, TagCatalog, TagCatalogBuilder, TagId,
    TagSpec,
};
