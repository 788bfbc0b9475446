//! `[mqtt] payload = "ua-json"`: OPC UA Part 14 (PubSub) JSON messages instead of the
//! gateway's own one-topic-per-tag JSON.
//!
//! ```text
//! <prefix>/json/data/<PublisherId>/<WriterGroupName>                     ua-data network messages
//! <prefix>/json/metadata/<PublisherId>/<WriterGroupName>/<DataSetWriter> ua-metadata, retained
//! <prefix>/json/status/<PublisherId>                                     ua-status, retained (+ will)
//! ```
//!
//! One DataSetWriter per device (`<station>.<device>`, ids from 2 in catalogue order) and one
//! for the truck's own tags (`Truck`, id 1: line, stop, orders, indicators, visits,
//! diagnostics). Each bus batch becomes one network message with a delta-frame dataset message
//! per writer that changed; a tag that changes twice in one batch starts a second dataset
//! message, so every change is carried. A connection starts with the metadata of every writer
//! (retained) and one key frame with every field; a writer with nothing to say for
//! `ua_keep_alive_ms` sends a `ua-keepalive` dataset message.
//!
//! JSON layout: Part 14 (1.05, 2022) section 7.2.5, field values as DataValues with
//! `StatusCode` (when not Good) and `SourceTimestamp`; see the JSON schema in
//! `docs/part14-pubsub-json.schema.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fabrique_adapters::tag::DataType;
use fabrique_adapters::{Point, TagCatalog, TagId, Timestamp};
use serde_json::{json, Map, Value as Json};

use super::payload::{rfc3339, JsonValue};
use crate::streams::TagLabels;

pub const TRUCK_WRITER: &str = "Truck";
/// The field every dataset message carries with `stop_in_payload`: the truck's stop.
pub const STOP_FIELD: &str = "Stop";

/// The retained `ua-status` message of the publisher (`<prefix>/json/status/<PublisherId>`):
/// PubSubState Operational (2) while connected, Error (3) as the last will and at a stop.
pub fn status(publisher_id: &str, online: bool) -> String {
    json!({
        "MessageId": format!("{publisher_id}-status-{}", Timestamp::now().as_nanos()),
        "MessageType": "ua-status",
        "PublisherId": publisher_id,
        "Timestamp": rfc3339(Timestamp::now()),
        "IsCyclic": false,
        "Status": if online { 2 } else { 3 },
    })
    .to_string()
}

/// The data type's OPC UA built-in type id (Part 6, 5.1.2).
fn built_in_type(data_type: DataType) -> u32 {
    match data_type {
        DataType::Bool => 1,
        DataType::Int16 => 4,
        DataType::UInt16 => 5,
        DataType::Int32 => 6,
        DataType::UInt32 => 7,
        DataType::Int64 => 8,
        DataType::UInt64 => 9,
        DataType::Float32 => 10,
        DataType::Float64 => 11,
        DataType::String => 12,
        DataType::DateTime => 13,
    }
}

struct Writer {
    id: u16,
    name: String,
    /// Field name, tag and type, in catalogue order.
    fields: Vec<(Arc<str>, TagId, DataType)>,
    sequence: u32,
    last_sent: Instant,
    /// The dataset message being built from the current bus batch.
    pending: Map<String, Json>,
}

pub struct Part14 {
    publisher_id: String,
    group: String,
    prefix: String,
    data_topic: Arc<str>,
    writers: Vec<Writer>,
    /// By `TagId`: writer index and field name.
    by_tag: Vec<Option<(usize, Arc<str>)>>,
    /// ConfigurationVersion: seconds since 2000-01-01 (Part 4 VersionTime) at start; the minor
    /// version moves when a reload adds tags.
    version: (u32, u32),
    message_id: u64,
    keep_alive: Duration,
    /// Dataset messages ready for the next network message.
    ready: Vec<Json>,
    /// `stop_in_payload`: the town, a `Stop` field in every key and delta frame.
    stop: Option<Arc<str>>,
}

fn version_time() -> u32 {
    const SECONDS_1970_TO_2000: i64 = 946_684_800;
    let secs = Timestamp::now().as_nanos() / 1_000_000_000 - SECONDS_1970_TO_2000;
    u32::try_from(secs).unwrap_or(0)
}

impl Part14 {
    pub fn new(
        prefix: &str,
        publisher_id: &str,
        group: &str,
        catalog: &TagCatalog,
        keep_alive: Duration,
    ) -> Self {
        let now = version_time();
        let mut part14 = Part14 {
            publisher_id: publisher_id.to_owned(),
            group: group.to_owned(),
            prefix: prefix.to_owned(),
            data_topic: format!("{prefix}/json/data/{publisher_id}/{group}").into(),
            writers: Vec::new(),
            by_tag: Vec::new(),
            version: (now, now),
            message_id: 0,
            keep_alive,
            ready: Vec::new(),
            stop: None,
        };
        part14.remodel(catalog);
        part14
    }

    /// Writers and fields of `catalog`; sequence numbers of the writers that stay are kept.
    pub fn remodel(&mut self, catalog: &TagCatalog) {
        let old = std::mem::take(&mut self.writers);
        let mut writers: Vec<Writer> = Vec::new();
        let mut by_tag = Vec::with_capacity(catalog.len());
        let writer_at = |writers: &mut Vec<Writer>, name: String| -> usize {
            if let Some(i) = writers.iter().position(|w| w.name == name) {
                return i;
            }
            let sequence = old
                .iter()
                .find(|w| w.name == name)
                .map_or(0, |w| w.sequence);
            writers.push(Writer {
                id: 0,
                name,
                fields: Vec::new(),
                sequence,
                last_sent: Instant::now(),
                pending: Map::new(),
            });
            writers.len() - 1
        };
        writer_at(&mut writers, TRUCK_WRITER.to_owned());
        for i in 0..catalog.len() {
            let tag = TagId(i as u32);
            let Some(entry) = catalog.get(tag) else {
                by_tag.push(None);
                continue;
            };
            let labels = TagLabels::of(&entry.spec.path);
            let name = match (&labels.station, &labels.device) {
                (Some(station), Some(device)) => format!("{station}.{device}"),
                _ => TRUCK_WRITER.to_owned(),
            };
            let w = writer_at(&mut writers, name);
            let field: Arc<str> = labels.tag.into();
            writers[w]
                .fields
                .push((field.clone(), tag, entry.spec.data_type));
            by_tag.push(Some((w, field)));
        }
        for (i, writer) in writers.iter_mut().enumerate() {
            writer.id = u16::try_from(i + 1).unwrap_or(u16::MAX);
        }
        if !old.is_empty() {
            self.version.1 = version_time().max(self.version.1 + 1);
        }
        self.writers = writers;
        self.by_tag = by_tag;
    }

    /// `stop_in_payload`: from now on every dataset message with a payload carries the field
    /// `Stop` (String, in the metadata of every writer) with this town.
    pub fn set_stop(&mut self, town: Arc<str>) {
        self.stop = Some(town);
    }

    /// A writer whose own fields have none named `Stop` (a device tag could be).
    fn carries_stop(&self, w: usize) -> bool {
        self.stop.is_some() && !self.writers[w].fields.iter().any(|f| &*f.0 == STOP_FIELD)
    }

    fn field_value(point: &Point) -> Json {
        let mut value = Map::new();
        value.insert(
            "Value".into(),
            serde_json::to_value(JsonValue(point.value.as_ref())).unwrap_or(Json::Null),
        );
        if !point.quality.is_good() {
            value.insert("StatusCode".into(), json!({ "Code": point.quality.0 }));
        }
        if let Some(ts) = rfc3339(point.timestamp) {
            value.insert("SourceTimestamp".into(), Json::String(ts));
        }
        Json::Object(value)
    }

    /// A change, into the dataset message of its writer.
    pub fn add(&mut self, tag: TagId, point: &Point) {
        let Some(Some((w, field))) = self.by_tag.get(tag.index()) else {
            return;
        };
        let (w, field) = (*w, field.clone());
        if self.writers[w].pending.contains_key(&*field) {
            // The second change of a tag in one batch: the first one goes in its own message.
            self.close_pending(w, "ua-deltaframe");
        }
        self.writers[w]
            .pending
            .insert(field.to_string(), Self::field_value(point));
    }

    fn dataset_message(&mut self, w: usize, kind: &str, mut payload: Option<Map<String, Json>>) {
        if let (true, Some(payload), Some(town)) = (self.carries_stop(w), &mut payload, &self.stop)
        {
            payload.insert(STOP_FIELD.into(), json!({ "Value": &**town }));
        }
        let version = self.version;
        let writer = &mut self.writers[w];
        writer.sequence = writer.sequence.wrapping_add(1);
        writer.last_sent = Instant::now();
        let mut message = json!({
            "DataSetWriterId": writer.id,
            "DataSetWriterName": writer.name,
            "SequenceNumber": writer.sequence,
            "MetaDataVersion": { "MajorVersion": version.0, "MinorVersion": version.1 },
            "Timestamp": rfc3339(Timestamp::now()),
            "MessageType": kind,
        });
        if let (Some(payload), Some(object)) = (payload, message.as_object_mut()) {
            object.insert("Payload".into(), Json::Object(payload));
        }
        self.ready.push(message);
    }

    fn close_pending(&mut self, w: usize, kind: &str) {
        let payload = std::mem::take(&mut self.writers[w].pending);
        if !payload.is_empty() {
            self.dataset_message(w, kind, Some(payload));
        }
    }

    /// The network message of what was added since the last call, if anything.
    pub fn flush(&mut self) -> Option<(Arc<str>, Vec<u8>)> {
        for w in 0..self.writers.len() {
            self.close_pending(w, "ua-deltaframe");
        }
        self.network_message()
    }

    fn network_message(&mut self) -> Option<(Arc<str>, Vec<u8>)> {
        if self.ready.is_empty() {
            return None;
        }
        self.message_id += 1;
        let message = json!({
            "MessageId": format!("{}-{}", self.publisher_id, self.message_id),
            "MessageType": "ua-data",
            "PublisherId": self.publisher_id,
            "WriterGroupName": self.group,
            "Messages": std::mem::take(&mut self.ready),
        });
        Some((self.data_topic.clone(), message.to_string().into_bytes()))
    }

    /// Every field of every writer with its current value (`latest`), as key frames.
    pub fn key_frame(&mut self, latest: impl Fn(TagId) -> Point) -> Option<(Arc<str>, Vec<u8>)> {
        for w in 0..self.writers.len() {
            self.close_pending(w, "ua-deltaframe");
            let payload: Map<String, Json> = self.writers[w]
                .fields
                .iter()
                .map(|(field, tag, _)| (field.to_string(), Self::field_value(&latest(*tag))))
                .collect();
            if !payload.is_empty() {
                self.dataset_message(w, "ua-keyframe", Some(payload));
            }
        }
        self.network_message()
    }

    /// Keep-alives of the writers silent for `keep_alive`.
    pub fn keep_alives(&mut self) -> Option<(Arc<str>, Vec<u8>)> {
        let now = Instant::now();
        for w in 0..self.writers.len() {
            if now.duration_since(self.writers[w].last_sent) >= self.keep_alive {
                self.dataset_message(w, "ua-keepalive", None);
            }
        }
        self.network_message()
    }

    /// The retained `ua-metadata` message of every writer.
    pub fn metadata(&mut self, catalog: &TagCatalog) -> Vec<(Arc<str>, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.writers.len());
        for writer in &self.writers {
            self.message_id += 1;
            let mut fields: Vec<Json> = writer
                .fields
                .iter()
                .map(|(name, tag, data_type)| {
                    let spec = catalog.get(*tag).map(|e| &e.spec);
                    let mut field = json!({
                        "Name": &**name,
                        "FieldFlags": 0,
                        "BuiltInType": built_in_type(*data_type),
                        "DataType": format!("i={}", built_in_type(*data_type)),
                        "ValueRank": -1,
                    });
                    if let (Some(text), Some(object)) = (
                        spec.and_then(|s| s.description.as_ref()),
                        field.as_object_mut(),
                    ) {
                        object.insert("Description".into(), json!({ "Text": text }));
                    }
                    if let (Some(unit), Some(object)) =
                        (spec.and_then(|s| s.unit.as_ref()), field.as_object_mut())
                    {
                        object.insert(
                            "Properties".into(),
                            json!([{ "Key": "EngineeringUnits", "Value": unit }]),
                        );
                    }
                    field
                })
                .collect();
            if self.stop.is_some() && !writer.fields.iter().any(|f| &*f.0 == STOP_FIELD) {
                fields.push(json!({
                    "Name": STOP_FIELD,
                    "FieldFlags": 0,
                    "BuiltInType": 12,
                    "DataType": "i=12",
                    "ValueRank": -1,
                    "Description": { "Text": "The stop the truck was at when the message was published" },
                }));
            }
            let message = json!({
                "MessageId": format!("{}-{}", self.publisher_id, self.message_id),
                "MessageType": "ua-metadata",
                "PublisherId": self.publisher_id,
                "DataSetWriterId": writer.id,
                "DataSetWriterName": writer.name,
                "MetaData": {
                    "Name": writer.name,
                    "Fields": fields,
                    "ConfigurationVersion": {
                        "MajorVersion": self.version.0,
                        "MinorVersion": self.version.1,
                    },
                },
            });
            let topic = format!(
                "{}/json/metadata/{}/{}/{}",
                self.prefix, self.publisher_id, self.group, writer.name
            );
            out.push((topic.into(), message.to_string().into_bytes()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabrique_adapters::tag::{AdapterId, TagCatalogBuilder, TagSpec};
    use fabrique_adapters::{Quality, Value};

    fn catalog() -> TagCatalog {
        let mut builder = TagCatalogBuilder::new();
        for (path, data_type) in [
            ("Line/State", DataType::String),
            (
                "Stations/Printing/Printer3D/NozzleTemperature",
                DataType::Float64,
            ),
        ] {
            builder
                .register(AdapterId(0), TagSpec::new(path, data_type).unit("°C"))
                .unwrap();
        }
        builder.build()
    }

    fn point(v: f64) -> Point {
        Point {
            value: Some(Value::Float(v)),
            quality: Quality::GOOD,
            timestamp: Timestamp::from_nanos(1_700_000_000_000_000_000),
        }
    }

    #[test]
    fn a_batch_is_one_network_message_and_repeated_changes_are_kept() {
        let mut p = Part14::new(
            "opcua",
            "truck-1",
            "fabrique",
            &catalog(),
            Duration::from_secs(10),
        );
        p.add(TagId(1), &point(1.0));
        p.add(TagId(1), &point(2.0));
        p.add(TagId(0), &point(3.0));
        let (topic, body) = p.flush().unwrap();
        assert_eq!(&*topic, "opcua/json/data/truck-1/fabrique");
        let doc: Json = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["MessageType"], "ua-data");
        let messages = doc["Messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{doc}");
        // The first change of the printer's tag closed its own message; then the batch.
        assert_eq!(messages[0]["DataSetWriterName"], "Printing.Printer3D");
        assert_eq!(messages[0]["Payload"]["NozzleTemperature"]["Value"], 1.0);
        assert_eq!(messages[1]["DataSetWriterId"], 1);
        assert_eq!(messages[2]["Payload"]["NozzleTemperature"]["Value"], 2.0);
        assert_eq!(messages[2]["SequenceNumber"], 2);
        assert_eq!(
            messages[0]["Payload"]["NozzleTemperature"]["SourceTimestamp"],
            "2023-11-14T22:13:20.000000000Z"
        );
        assert!(p.flush().is_none(), "nothing new, nothing sent");
    }

    #[test]
    fn the_stop_is_a_field_of_every_dataset_when_asked() {
        let catalog = catalog();
        let mut p = Part14::new("opcua", "truck-1", "g", &catalog, Duration::ZERO);
        p.set_stop("Lens".into());
        p.add(TagId(1), &point(1.0));
        let doc: Json = serde_json::from_slice(&p.flush().unwrap().1).unwrap();
        assert_eq!(doc["Messages"][0]["Payload"]["Stop"]["Value"], "Lens");
        let metadata = p.metadata(&catalog);
        let doc: Json = serde_json::from_slice(&metadata[1].1).unwrap();
        assert_eq!(doc["MetaData"]["Fields"][1]["Name"], "Stop");
        assert_eq!(doc["MetaData"]["Fields"][1]["BuiltInType"], 12);
        // Keep-alives have no payload, hence no stop.
        let doc: Json = serde_json::from_slice(&p.keep_alives().unwrap().1).unwrap();
        assert!(doc["Messages"][0].get("Payload").is_none());
    }

    #[test]
    fn metadata_names_every_field_with_its_type() {
        let catalog = catalog();
        let mut p = Part14::new(
            "opcua",
            "truck-1",
            "fabrique",
            &catalog,
            Duration::from_secs(10),
        );
        let metadata = p.metadata(&catalog);
        assert_eq!(metadata.len(), 2);
        assert_eq!(
            &*metadata[1].0,
            "opcua/json/metadata/truck-1/fabrique/Printing.Printer3D"
        );
        let doc: Json = serde_json::from_slice(&metadata[1].1).unwrap();
        assert_eq!(doc["MetaData"]["Fields"][0]["Name"], "NozzleTemperature");
        assert_eq!(doc["MetaData"]["Fields"][0]["BuiltInType"], 11);
        let keep_alive = Part14::new("opcua", "t", "g", &catalog, Duration::ZERO)
            .keep_alives()
            .unwrap();
        let doc: Json = serde_json::from_slice(&keep_alive.1).unwrap();
        assert_eq!(doc["Messages"][0]["MessageType"], "ua-keepalive");
        assert!(doc["Messages"][0].get("Payload").is_none());
    }
}
