//! The catalogue as Sparkplug sees it: which tags are node metrics and which belong to which
//! device, with their names, aliases and data types; and values both ways.
//!
//! - A device tag `Stations/<station>/<device>/<tag>` is the metric `<tag>` of the Sparkplug
//!   Device `<station>:<device>` (a device id is one topic level, so no `/`).
//! - Every other tag (line, stop, visits, indicators, diagnostics) is a node metric named by
//!   its path (`Line/State`): Sparkplug hosts show `/` as folders.
//! - The alias of a metric is its `TagId`: unique in the whole node, stable while the gateway
//!   runs (a reload appends, and retired tags keep their id), which is what aliases need.

use std::collections::HashMap;
use std::sync::Arc;

use fabrique_adapters::tag::{DataType, TagCatalog, TagId};
use fabrique_adapters::{Point, Quality, Timestamp, Value};

use super::proto::{data_type as dt, Metric, MetricValue, PropertySet, PropertyValue};
use super::proto::{Payload, PropertyValueKind};
use crate::streams::TagLabels;

/// Alias of the node's `bdSeq` and `Node Control/Rebirth` metrics: above every tag id.
pub const BD_SEQ_ALIAS: u64 = 1 << 40;
pub const REBIRTH_ALIAS: u64 = (1 << 40) + 1;
pub const REBIRTH: &str = "Node Control/Rebirth";

/// Whose metric a tag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Node,
    /// Index in [`Model::devices`].
    Device(usize),
}

#[derive(Debug, Clone)]
pub struct Place {
    pub owner: Owner,
    pub name: Arc<str>,
    pub data_type: DataType,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// `<station>:<device>`: the Sparkplug device id.
    pub id: String,
    pub tags: Vec<TagId>,
    /// Its `Status/Connected` tag, when it has one: false is a DDEATH, true again a DBIRTH.
    pub status: Option<TagId>,
}

/// The tag below a device that says whether the device answers.
pub const STATUS_CONNECTED: &str = "Status/Connected";

#[derive(Debug, Default)]
pub struct Model {
    /// By `TagId`; `None` for a retired tag.
    pub tags: Vec<Option<Place>>,
    pub devices: Vec<Device>,
    pub node_tags: Vec<TagId>,
    by_device_id: HashMap<String, usize>,
}

impl Model {
    pub fn of(catalog: &TagCatalog) -> Model {
        let mut model = Model::default();
        for i in 0..catalog.len() {
            let id = TagId(i as u32);
            let Some(entry) = catalog.get(id) else {
                model.tags.push(None);
                continue;
            };
            let labels = TagLabels::of(&entry.spec.path);
            let owner = match (&labels.station, &labels.device) {
                (Some(station), Some(device)) => {
                    let device_id = format!("{station}:{device}");
                    let index = *model
                        .by_device_id
                        .entry(device_id.clone())
                        .or_insert_with(|| {
                            model.devices.push(Device {
                                id: device_id,
                                tags: Vec::new(),
                                status: None,
                            });
                            model.devices.len() - 1
                        });
                    model.devices[index].tags.push(id);
                    if labels.tag == STATUS_CONNECTED {
                        model.devices[index].status = Some(id);
                    }
                    Owner::Device(index)
                }
                _ => {
                    model.node_tags.push(id);
                    Owner::Node
                }
            };
            model.tags.push(Some(Place {
                owner,
                name: labels.tag.into(),
                data_type: entry.spec.data_type,
            }));
        }
        model
    }

    pub fn place(&self, tag: TagId) -> Option<&Place> {
        self.tags.get(tag.index())?.as_ref()
    }

    pub fn device(&self, id: &str) -> Option<usize> {
        self.by_device_id.get(id).copied()
    }

    /// The tag a command metric names, by alias or by name, among `owner`'s metrics.
    pub fn command_target(&self, owner: Owner, metric: &Metric) -> Option<TagId> {
        if let Some(alias) = metric.alias {
            let tag = TagId(u32::try_from(alias).ok()?);
            return (self.place(tag)?.owner == owner).then_some(tag);
        }
        let name = metric.name.as_deref()?;
        let candidates = match owner {
            Owner::Node => &self.node_tags,
            Owner::Device(i) => &self.devices.get(i)?.tags,
        };
        candidates
            .iter()
            .copied()
            .find(|&t| self.place(t).is_some_and(|p| &*p.name == name))
    }
}

pub fn sparkplug_type(data_type: DataType) -> u32 {
    match data_type {
        DataType::Bool => dt::BOOLEAN,
        DataType::Int16 => dt::INT16,
        DataType::UInt16 => dt::UINT16,
        DataType::Int32 => dt::INT32,
        DataType::UInt32 => dt::UINT32,
        DataType::Int64 => dt::INT64,
        DataType::UInt64 => dt::UINT64,
        DataType::Float32 => dt::FLOAT,
        DataType::Float64 => dt::DOUBLE,
        DataType::String => dt::STRING,
        DataType::DateTime => dt::DATETIME,
    }
}

fn millis(ts: Timestamp) -> u64 {
    (ts.as_nanos() / 1_000_000).max(0) as u64
}

pub fn now_ms() -> u64 {
    millis(Timestamp::now())
}

/// A value in the field its Sparkplug data type uses; `None` when it does not fit (null).
fn metric_value(data_type: DataType, value: &Value) -> Option<MetricValue> {
    Some(match (data_type, value) {
        (DataType::Bool, Value::Bool(b)) => MetricValue::BooleanValue(*b),
        // Signed 8–32 bit integers travel as their two's complement in a uint32 (spec 6.4.16).
        (DataType::Int16 | DataType::Int32, v) => {
            MetricValue::IntValue(i32::try_from(integer(v)?).ok()? as u32)
        }
        (DataType::UInt16 | DataType::UInt32, v) => {
            MetricValue::IntValue(u32::try_from(integer(v)?).ok()?)
        }
        (DataType::Int64, v) => MetricValue::LongValue(i64::try_from(integer(v)?).ok()? as u64),
        (DataType::UInt64, v) => MetricValue::LongValue(u64::try_from(integer(v)?).ok()?),
        (DataType::Float32, v) => MetricValue::FloatValue(v.as_f64()? as f32),
        (DataType::Float64, v) => MetricValue::DoubleValue(v.as_f64()?),
        (DataType::String, Value::Text(t)) => MetricValue::StringValue(t.to_string()),
        (DataType::DateTime, Value::Time(t)) => MetricValue::LongValue(millis(*t)),
        _ => return None,
    })
}

fn integer(value: &Value) -> Option<i128> {
    match *value {
        Value::Int(i) => Some(i.into()),
        Value::UInt(u) => Some(u.into()),
        Value::Bool(b) => Some(b.into()),
        _ => None,
    }
}

/// A command metric's value as the tag's type wants it.
pub fn command_value(data_type: DataType, value: &MetricValue) -> Option<Value> {
    let as_i64 = |v: &MetricValue| match *v {
        MetricValue::IntValue(u) => Some(i64::from(u as i32)),
        MetricValue::LongValue(l) => Some(l as i64),
        MetricValue::BooleanValue(b) => Some(i64::from(b)),
        _ => None,
    };
    let as_u64 = |v: &MetricValue| match *v {
        MetricValue::IntValue(u) => Some(u64::from(u)),
        MetricValue::LongValue(l) => Some(l),
        MetricValue::BooleanValue(b) => Some(u64::from(b)),
        _ => None,
    };
    Some(match data_type {
        DataType::Bool => match *value {
            MetricValue::BooleanValue(b) => Value::Bool(b),
            _ => Value::Bool(as_u64(value)? != 0),
        },
        DataType::Int16 | DataType::Int32 | DataType::Int64 => Value::Int(as_i64(value)?),
        DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Value::UInt(as_u64(value)?),
        DataType::Float32 | DataType::Float64 => Value::Float(match *value {
            MetricValue::FloatValue(f) => f64::from(f),
            MetricValue::DoubleValue(d) => d,
            _ => as_i64(value)? as f64,
        }),
        DataType::String => match value {
            MetricValue::StringValue(s) => Value::text(s),
            _ => return None,
        },
        DataType::DateTime => Value::Time(Timestamp::from_nanos(
            (as_u64(value)? as i64).saturating_mul(1_000_000),
        )),
    })
}

/// Sparkplug's quality codes (the `Quality` property hosts such as Ignition read).
fn quality_code(quality: Quality) -> u32 {
    if quality.is_good() {
        192
    } else if quality.is_bad() {
        0
    } else {
        // Uncertain: Ignition's "stale"-like code.
        500
    }
}

fn property(key: &str, value: PropertyValueKind, kind: u32, set: &mut PropertySet) {
    set.keys.push(key.to_owned());
    set.values.push(PropertyValue {
        r#type: Some(kind),
        is_null: None,
        value: Some(value),
    });
}

/// A metric for a birth (`birth`: with name, data type and properties) or a data message
/// (alias, timestamp and value only; the quality only when not good).
pub fn metric(
    tag: TagId,
    place: &Place,
    point: &Point,
    birth: Option<&fabrique_adapters::tag::TagSpec>,
) -> Metric {
    let value = point
        .value
        .as_ref()
        .and_then(|v| metric_value(place.data_type, v));
    let mut properties = PropertySet::default();
    if let Some(spec) = birth {
        if let Some(unit) = &spec.unit {
            property(
                "engUnit",
                PropertyValueKind::StringValue(unit.clone()),
                dt::STRING,
                &mut properties,
            );
        }
        if let Some(range) = spec.range {
            property(
                "engLow",
                PropertyValueKind::DoubleValue(range.low),
                dt::DOUBLE,
                &mut properties,
            );
            property(
                "engHigh",
                PropertyValueKind::DoubleValue(range.high),
                dt::DOUBLE,
                &mut properties,
            );
        }
    }
    if birth.is_some() || !point.quality.is_good() {
        property(
            "Quality",
            PropertyValueKind::IntValue(quality_code(point.quality)),
            dt::INT32,
            &mut properties,
        );
    }
    Metric {
        name: birth.map(|_| place.name.to_string()),
        alias: Some(u64::from(tag.0)),
        timestamp: Some(if point.timestamp.is_null() {
            now_ms()
        } else {
            millis(point.timestamp)
        }),
        datatype: birth.map(|_| sparkplug_type(place.data_type)),
        is_null: value.is_none().then_some(true),
        properties: (!properties.keys.is_empty()).then_some(properties),
        value,
        ..Metric::default()
    }
}

/// The property `stop` (String) on a metric: where the truck was when the value changed
/// (`stop_in_payload`).
pub fn add_stop(metric: &mut Metric, stop: &str) {
    let set = metric.properties.get_or_insert_with(PropertySet::default);
    property(
        "stop",
        PropertyValueKind::StringValue(stop.to_owned()),
        dt::STRING,
        set,
    );
}

pub fn bd_seq_metric(bd_seq: u64, birth: bool) -> Metric {
    Metric {
        name: Some("bdSeq".into()),
        alias: birth.then_some(BD_SEQ_ALIAS),
        timestamp: Some(now_ms()),
        datatype: Some(dt::INT64),
        value: Some(MetricValue::LongValue(bd_seq)),
        ..Metric::default()
    }
}

pub fn rebirth_metric() -> Metric {
    Metric {
        name: Some(REBIRTH.into()),
        alias: Some(REBIRTH_ALIAS),
        timestamp: Some(now_ms()),
        datatype: Some(dt::BOOLEAN),
        value: Some(MetricValue::BooleanValue(false)),
        ..Metric::default()
    }
}

/// The NDEATH payload: `bdSeq` alone, no sequence number.
pub fn death(bd_seq: u64) -> Payload {
    Payload {
        timestamp: Some(now_ms()),
        metrics: vec![bd_seq_metric(bd_seq, false)],
        ..Payload::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabrique_adapters::tag::{AdapterId, TagCatalogBuilder, TagSpec};
    use prost::Message;

    #[test]
    fn device_tags_go_to_their_device_and_the_rest_to_the_node() {
        let mut builder = TagCatalogBuilder::new();
        let owner = AdapterId(0);
        for path in [
            "Line/State",
            "Stations/Printing/Printer3D/NozzleTemperature",
            "Stations/Printing/Printer3D/Status/Connected",
            "Stations/Assembly/Robot/Speed",
        ] {
            builder
                .register(owner, TagSpec::new(path, DataType::Float64))
                .unwrap();
        }
        let model = Model::of(&builder.build());
        assert_eq!(model.node_tags, vec![TagId(0)]);
        assert_eq!(model.devices.len(), 2);
        assert_eq!(model.devices[0].id, "Printing:Printer3D");
        assert_eq!(model.devices[0].tags, vec![TagId(1), TagId(2)]);
        assert_eq!(&*model.place(TagId(2)).unwrap().name, "Status/Connected");
        assert_eq!(model.device("Assembly:Robot"), Some(1));
        assert_eq!(model.devices[0].status, Some(TagId(2)));
        assert_eq!(model.devices[1].status, None);
        let by_name = Metric {
            name: Some("NozzleTemperature".into()),
            ..Metric::default()
        };
        assert_eq!(
            model.command_target(Owner::Device(0), &by_name),
            Some(TagId(1))
        );
        assert_eq!(model.command_target(Owner::Device(1), &by_name), None);
        let by_alias = Metric {
            alias: Some(3),
            ..Metric::default()
        };
        assert_eq!(
            model.command_target(Owner::Device(1), &by_alias),
            Some(TagId(3))
        );
        assert_eq!(model.command_target(Owner::Node, &by_alias), None);
    }

    #[test]
    fn values_round_trip_through_their_sparkplug_fields() {
        for (data_type, value) in [
            (DataType::Int16, Value::Int(-5)),
            (DataType::Int32, Value::Int(-70_000)),
            (DataType::UInt16, Value::UInt(65_535)),
            (DataType::Int64, Value::Int(-1)),
            (DataType::UInt64, Value::UInt(u64::MAX)),
            (DataType::Float64, Value::Float(215.5)),
            (DataType::Bool, Value::Bool(true)),
            (DataType::String, Value::text("Running")),
        ] {
            let field = metric_value(data_type, &value).unwrap();
            assert_eq!(command_value(data_type, &field), Some(value));
        }
        assert_eq!(metric_value(DataType::Int16, &Value::text("x")), None);
    }

    #[test]
    fn births_carry_name_type_and_units_and_data_only_the_alias() {
        let mut builder = TagCatalogBuilder::new();
        let spec = TagSpec::new(
            "Stations/Printing/Printer3D/NozzleTemperature",
            DataType::Float64,
        )
        .unit("°C")
        .range(0.0, 300.0);
        builder.register(AdapterId(0), spec.clone()).unwrap();
        let model = Model::of(&builder.build());
        let place = model.place(TagId(0)).unwrap();
        let point = Point {
            value: Some(Value::Float(210.0)),
            quality: Quality::GOOD,
            timestamp: Timestamp::from_nanos(1_700_000_000_000_000_000),
        };
        let birth = metric(TagId(0), place, &point, Some(&spec));
        assert_eq!(birth.name.as_deref(), Some("NozzleTemperature"));
        assert_eq!(birth.datatype, Some(dt::DOUBLE));
        let props = birth.properties.as_ref().unwrap();
        assert_eq!(props.keys, vec!["engUnit", "engLow", "engHigh", "Quality"]);
        let data = metric(TagId(0), place, &point, None);
        assert_eq!(
            (data.name, data.datatype, data.properties),
            (None, None, None)
        );
        assert_eq!(data.alias, Some(0));
        assert_eq!(data.timestamp, Some(1_700_000_000_000));
        // Encodes and decodes as the same message.
        let payload = Payload {
            metrics: vec![birth.clone()],
            seq: Some(0),
            ..Payload::default()
        };
        let back = Payload::decode(payload.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.metrics[0], birth);
    }
}
