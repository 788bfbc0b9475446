//! Alarms north: a condition's state as the MQTT publisher, the InfluxDB sink and the HTTP API
//! carry it (README, "Alarms north").
//!
//! Everything here is fed by [`super::Alarms::subscribe`], the one place every condition kind
//! reports its state changes through, so a new kind of condition goes north with no code here.
//! The sinks keep their own connection and buffering: this module only says what a state looks
//! like on each of them.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat};
use fabrique_adapters::Timestamp;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{Alarms, ConditionState};
use crate::streams::influxdb::line::{escape_measurement, escape_string_field, escape_tag_value};

/// The InfluxDB measurement of alarm state changes.
pub const MEASUREMENT: &str = "alarms";
/// State changes `GET /api/alarms` keeps (newest first).
pub const RECENT: usize = 200;

/// A condition's id outside OPC UA: `<source>/<condition name>`, e.g.
/// `Stations/Partners/B/Communication` (the MQTT topic under `alarms/`, the HTTP path).
pub fn condition_id(state: &ConditionState) -> String {
    format!("{}/{}", state.source, state.name)
}

/// The source and condition name of an id made by [`condition_id`].
pub fn parse_condition_id(id: &str) -> Option<(&str, &str)> {
    id.rsplit_once('/')
        .filter(|(source, name)| !source.is_empty() && !name.is_empty())
}

fn rfc3339(t: Timestamp) -> String {
    DateTime::from_timestamp_nanos(t.as_nanos()).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A condition's state as JSON (MQTT payload, HTTP answers).
#[derive(Debug, Serialize)]
pub struct AlarmJson {
    pub id: String,
    pub condition: &'static str,
    pub source: String,
    pub severity: u16,
    pub enabled: bool,
    pub active: bool,
    pub acked: bool,
    pub confirmed: bool,
    /// Part 9's Retain: in an alarm list (active, or waiting for an acknowledgement).
    pub retain: bool,
    pub message: String,
    pub comment: String,
    pub time: String,
    /// The EventId of the OPC UA event that reported this state, in hex.
    pub event_id: String,
}

impl From<&ConditionState> for AlarmJson {
    fn from(s: &ConditionState) -> Self {
        AlarmJson {
            id: condition_id(s),
            condition: s.name,
            source: s.source.clone(),
            severity: s.severity,
            enabled: s.enabled,
            active: s.active,
            acked: s.acked,
            confirmed: s.confirmed,
            retain: s.retain(),
            message: s.message.clone(),
            comment: s.comment.clone(),
            time: rfc3339(s.time),
            event_id: hex(&s.event_id),
        }
    }
}

/// The alarm list: the retained conditions (active, unacknowledged or unconfirmed), most
/// severe first, then newest first.
pub fn active_list(mut conditions: Vec<ConditionState>) -> Vec<AlarmJson> {
    conditions.retain(ConditionState::retain);
    conditions.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.time.as_nanos().cmp(&a.time.as_nanos()))
            .then_with(|| condition_id(a).cmp(&condition_id(b)))
    });
    conditions.iter().map(AlarmJson::from).collect()
}

/// MQTT: `<prefix>/<site>/alarms/<condition id>` for each state change (not retained) and the
/// retained alarm list on `<prefix>/<site>/alarms/active`.
pub struct MqttAlarms {
    alarms: Arc<Alarms>,
    changes: Option<tokio::sync::broadcast::Receiver<ConditionState>>,
    /// `<prefix>/<site>/alarms`
    root: String,
}

/// One message for the MQTT publisher to queue.
pub struct MqttAlarmMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The alarm list: retained, regenerated on every connection (never spooled).
    pub list: bool,
}

impl MqttAlarms {
    /// Subscribes at once, so nothing reported after the sink is built is missed.
    pub fn new(alarms: Arc<Alarms>, prefix: &str, site: &str) -> Self {
        MqttAlarms {
            changes: Some(alarms.subscribe()),
            alarms,
            root: format!("{prefix}/{site}/alarms"),
        }
    }

    pub fn list_topic(&self) -> String {
        format!("{}/active", self.root)
    }

    /// The retained alarm list as it is now.
    pub fn list(&self) -> MqttAlarmMessage {
        let list = active_list(self.alarms.conditions());
        MqttAlarmMessage {
            topic: self.list_topic(),
            payload: serde_json::to_vec(&list).unwrap_or_default(),
            list: true,
        }
    }

    fn change(&self, state: &ConditionState) -> MqttAlarmMessage {
        MqttAlarmMessage {
            topic: format!("{}/{}", self.root, condition_id(state)),
            payload: serde_json::to_vec(&AlarmJson::from(state)).unwrap_or_default(),
            list: false,
        }
    }

    /// The next messages: a state change and the list after it. Pends forever once the
    /// alarms are gone (the gateway stops), so it can sit in a `select!`.
    pub async fn next(&mut self) -> Vec<MqttAlarmMessage> {
        let Some(changes) = self.changes.as_mut() else {
            return std::future::pending().await;
        };
        match changes.recv().await {
            Ok(state) => vec![self.change(&state), self.list()],
            Err(RecvError::Lagged(missed)) => {
                // The changes in between are lost for the per-condition topics; the list
                // says where every condition is now.
                tracing::warn!(
                    missed,
                    "mqtt publisher: alarm changes missed; the list is resent"
                );
                vec![self.list()]
            }
            Err(RecvError::Closed) => {
                self.changes = None;
                Vec::new()
            }
        }
    }
}

/// InfluxDB: one line of measurement `alarms` per state change; tags `condition`, `site`,
/// `source`; fields `severity` (integer), `active`, `acked`, `confirmed`, `enabled` (booleans),
/// `message`, `comment` (strings); the state's time.
pub fn influx_line(buf: &mut Vec<u8>, site: &str, state: &ConditionState) {
    escape_measurement(buf, MEASUREMENT);
    for (key, value) in [
        ("condition", state.name),
        ("site", site),
        ("source", state.source.as_str()),
    ] {
        if !value.is_empty() {
            buf.push(b',');
            buf.extend_from_slice(key.as_bytes());
            buf.push(b'=');
            escape_tag_value(buf, value);
        }
    }
    buf.extend_from_slice(format!(" severity={}i", state.severity).as_bytes());
    for (key, value) in [
        ("active", state.active),
        ("acked", state.acked),
        ("confirmed", state.confirmed),
        ("enabled", state.enabled),
    ] {
        buf.extend_from_slice(format!(",{key}={value}").as_bytes());
    }
    for (key, value) in [("message", &state.message), ("comment", &state.comment)] {
        buf.extend_from_slice(format!(",{key}=\"").as_bytes());
        escape_string_field(buf, value);
        buf.push(b'"');
    }
    let time = if state.time.is_null() {
        Timestamp::now()
    } else {
        state.time
    };
    buf.extend_from_slice(format!(" {}\n", time.as_nanos()).as_bytes());
}

/// The last state changes, newest first, for `GET /api/alarms`.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<VecDeque<ConditionState>>>);

impl Recent {
    pub fn snapshot(&self) -> Vec<ConditionState> {
        self.0.lock().iter().cloned().collect()
    }

    fn push(&self, state: ConditionState) {
        let mut recent = self.0.lock();
        // A change made while the list was being seeded may be in the seed already.
        if recent.iter().any(|r| r.event_id == state.event_id) {
            return;
        }
        recent.push_front(state);
        recent.truncate(RECENT);
    }

    /// Append changes older than those listed (newest first), up to [`RECENT`] in all: the
    /// list as it was before a restart.
    fn seed(&self, older: Vec<ConditionState>) {
        let mut recent = self.0.lock();
        for state in older {
            if recent.len() >= RECENT {
                break;
            }
            if !recent.iter().any(|r| r.event_id == state.event_id) {
                recent.push_back(state);
            }
        }
    }

    /// Keeps the last [`RECENT`] changes until `shutdown`, starting from what `before`
    /// returns (the changes stored before this start, newest first; run on a blocking
    /// thread: it reads files). Changes made meanwhile are not missed: the list subscribes
    /// to them first.
    pub fn record(
        &self,
        alarms: &Alarms,
        before: impl FnOnce() -> Vec<ConditionState> + Send + 'static,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut changes = alarms.subscribe();
        let recent = self.clone();
        async move {
            match tokio::task::spawn_blocking(before).await {
                Ok(older) => recent.seed(older),
                Err(error) => tracing::warn!(%error, "alarms: the recent list starts empty"),
            }
            loop {
                let changed = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = changes.recv() => changed,
                };
                match changed {
                    Ok(state) => recent.push(state),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "alarms: changes missed by the recent list")
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: i64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn every_state_change_is_reported_to_subscribers() {
        let alarms = Alarms::default();
        let mut changes = alarms.subscribe();
        let lost = alarms
            .device_connection("Stations/P/press", false, "refused", at(1))
            .expect("raised");
        alarms
            .acknowledge(
                "Stations/P/press",
                "Communication",
                &lost.event_id,
                "ok",
                at(2),
            )
            .expect("acked");
        let first = changes.try_recv().expect("raise reported");
        assert!(first.active && !first.acked);
        let second = changes.try_recv().expect("ack reported");
        assert!(second.acked);
        assert_eq!(second.comment, "ok");
        assert!(changes.try_recv().is_err());
    }

    #[test]
    fn the_id_round_trips_and_the_list_holds_retained_conditions_only() {
        let alarms = Alarms::default();
        let a = alarms
            .device_connection("Stations/P/press", false, "", at(1))
            .expect("raised");
        assert_eq!(condition_id(&a), "Stations/P/press/Communication");
        assert_eq!(
            parse_condition_id(&condition_id(&a)),
            Some(("Stations/P/press", "Communication"))
        );
        assert_eq!(parse_condition_id("Communication"), None);
        let b = alarms
            .device_connection("Stations/P/saw", false, "", at(2))
            .expect("raised");
        alarms.device_connection("Stations/P/saw", true, "", at(3));
        let saw = alarms
            .conditions()
            .into_iter()
            .find(|c| c.source == b.source)
            .unwrap();
        let acked = alarms
            .acknowledge(&saw.source, saw.name, &saw.event_id, "", at(4))
            .expect("acked");
        // Inactive and acknowledged is still retained until confirmed (Part 9).
        assert_eq!(active_list(alarms.conditions()).len(), 2);
        alarms
            .confirm(&saw.source, saw.name, &acked.event_id, "", at(5))
            .expect("confirmed");
        let list = active_list(alarms.conditions());
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "Stations/P/press/Communication");
        assert!(list[0].active && !list[0].acked);
    }

    #[test]
    fn the_influx_line_escapes_and_types_its_fields() {
        let alarms = Alarms::default();
        let state = alarms
            .device_connection("Stations/P/big press", false, "said \"no\"\nbye", at(5))
            .expect("raised");
        let mut buf = Vec::new();
        influx_line(&mut buf, "truck 1", &state);
        let line = String::from_utf8(buf).unwrap();
        assert_eq!(
            line,
            "alarms,condition=Communication,site=truck\\ 1,source=Stations/P/big\\ press \
             severity=700i,active=true,acked=false,confirmed=false,enabled=true,\
             message=\"Stations/P/big press: communication lost (said \\\"no\\\"\\nbye)\",\
             comment=\"\" 5\n"
        );
    }
}
