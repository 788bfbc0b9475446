//! Alarms and Conditions (OPC 10000-9): the gateway's own condition runtime.
//!
//! async-opcua 0.19 has the condition event types but no runtime (no state, Retain or
//! acknowledgement), so the state of every condition lives here. Every change of a
//! condition's state, whatever its kind, goes out through ONE place, [`Alarms::publish`],
//! a broadcast of [`ConditionState`] snapshots: the OPC UA event path (`opcua/events.rs`),
//! the state file (`persist.rs`) and the northbound sinks subscribe to it.
//!
//! Conditions: one `OffNormalAlarmType` per device, for its communication
//! (`<device>/Status/Connected`); one `ExclusiveLimitAlarmType` per tag with configured
//! limits (`limit.rs`); the line's metrology NOK `OffNormalAlarmType` (`metrology.rs`).

pub mod event;
pub mod http;
pub mod limit;
pub mod methods;
pub mod metrology;
pub mod north;
pub mod persist;
pub mod refresh;
pub mod reload;

use std::collections::HashMap;

use fabrique_adapters::Timestamp;
use parking_lot::Mutex;
use tokio::sync::broadcast;

pub use fabrique_adapters::limits::{AlarmLimits, LimitLevel};

/// What kind of condition, and what only that kind carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionKind {
    /// `OffNormalAlarmType`.
    OffNormal,
    /// `ExclusiveLimitAlarmType`: the level it is in (none while inactive), and its limits.
    ExclusiveLimit {
        level: Option<LimitLevel>,
        limits: AlarmLimits,
    },
}

/// The state of one condition (a single branch: the gateway keeps no previous states).
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionState {
    /// The condition's name (`ConditionName`), e.g. `Communication`.
    pub name: &'static str,
    /// The object the condition is about: a device path `Stations/<station>/<device>`, or a
    /// tag path for a limit alarm.
    pub source: String,
    pub kind: ConditionKind,
    pub enabled: bool,
    pub active: bool,
    pub acked: bool,
    pub confirmed: bool,
    pub severity: u16,
    pub message: String,
    pub comment: String,
    /// When the state last changed.
    pub time: Timestamp,
    /// The EventId of the event that reported this state: what Acknowledge and Confirm name.
    pub event_id: Vec<u8>,
}

impl ConditionState {
    /// Part 9, 5.5.2: a condition is retained while it is active or still waits for an
    /// acknowledgement or a confirmation, and only while enabled.
    pub fn retain(&self) -> bool {
        self.enabled && (self.active || !self.acked || !self.confirmed)
    }
}

/// Severity of a lost device (as its `DeviceConnectionEventType`).
const COMMUNICATION_SEVERITY: u16 = 700;
pub const COMMUNICATION: &str = "Communication";
/// The condition name of a tag's limit alarm.
pub const LIMIT: &str = "Limit";
/// The condition name of the line's metrology NOK alarm (metrology.rs).
pub const METROLOGY: &str = "Metrology";

/// The `&'static` name of a known condition name (for conditions read back from disk).
pub fn known_name(name: &str) -> Option<&'static str> {
    [COMMUNICATION, LIMIT, METROLOGY]
        .into_iter()
        .find(|n| *n == name)
}

fn new_event_id() -> Vec<u8> {
    crate::opcua::events::event_id().as_ref().to_vec()
}

/// Why a condition method was refused (each maps to its Part 9 status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such condition (`BadNodeIdUnknown`).
    UnknownCondition,
    /// The EventId names no state of this condition (`BadEventIdUnknown`).
    EventIdUnknown,
    /// `BadConditionBranchAlreadyAcked`.
    AlreadyAcked,
    /// `BadConditionBranchAlreadyConfirmed`.
    AlreadyConfirmed,
    /// `BadConditionDisabled`.
    Disabled,
    /// `BadConditionAlreadyEnabled`.
    AlreadyEnabled,
    /// `BadConditionAlreadyDisabled`.
    AlreadyDisabled,
}

impl Refused {
    pub fn status(self) -> opcua::types::StatusCode {
        use opcua::types::StatusCode;
        match self {
            Refused::UnknownCondition => StatusCode::BadNodeIdUnknown,
            Refused::EventIdUnknown => StatusCode::BadEventIdUnknown,
            Refused::AlreadyAcked => StatusCode::BadConditionBranchAlreadyAcked,
            Refused::AlreadyConfirmed => StatusCode::BadConditionBranchAlreadyConfirmed,
            Refused::Disabled => StatusCode::BadConditionDisabled,
            Refused::AlreadyEnabled => StatusCode::BadConditionAlreadyEnabled,
            Refused::AlreadyDisabled => StatusCode::BadConditionAlreadyDisabled,
        }
    }
}

/// What a source says of its condition: active or not, how bad, and why.
pub struct Observed {
    pub active: bool,
    pub kind: ConditionKind,
    pub severity: u16,
    pub message: String,
}

/// How many state changes the broadcast holds for a slow subscriber.
const CHANGES_CAPACITY: usize = 4096;

/// Every condition's state, by (source, condition name).
pub struct Alarms {
    conditions: Mutex<HashMap<(String, &'static str), ConditionState>>,
    changes: broadcast::Sender<ConditionState>,
    /// The state file's writer thread (persist.rs), once started.
    writer: std::sync::OnceLock<persist::Writer>,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            conditions: Mutex::default(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            writer: std::sync::OnceLock::new(),
        }
    }
}

impl Alarms {
    /// Every later change of any condition's state, in order. A subscriber that falls more
    /// than 4,096 changes behind gets `Lagged` and may read [`Alarms::conditions`] again.
    pub fn subscribe(&self) -> broadcast::Receiver<ConditionState> {
        self.changes.subscribe()
    }

    /// THE place every condition's state change goes out through. Called with the
    /// conditions' lock held, so subscribers see the changes in the order they were made.
    fn publish(&self, state: &ConditionState) {
        // No subscriber (unit tests, a gateway before its server started) is no error.
        let _ = self.changes.send(state.clone());
        if let Some(writer) = self.writer.get() {
            // Never blocks: the thread coalesces what piles up.
            let _ = writer.send(persist::Request(None));
        }
    }

    fn set_writer(&self, writer: persist::Writer) {
        let _ = self.writer.set(writer);
    }

    /// Wait until every change made so far is on disk (at once when nothing is saved).
    pub async fn durable(&self) {
        let Some(writer) = self.writer.get() else {
            return;
        };
        let (done, saved) = tokio::sync::oneshot::channel();
        if writer.send(persist::Request(Some(done))).is_ok() {
            let _ = saved.await;
        }
    }

    /// The state of every condition.
    pub fn conditions(&self) -> Vec<ConditionState> {
        self.conditions.lock().values().cloned().collect()
    }

    /// The retained conditions (what ConditionRefresh replays), oldest change first.
    pub fn retained(&self) -> Vec<ConditionState> {
        let mut out: Vec<_> = self
            .conditions
            .lock()
            .values()
            .filter(|c| c.retain())
            .cloned()
            .collect();
        out.sort_by_key(|c| c.time);
        out
    }

    /// The level a tag's limit alarm is in (none when normal or unknown).
    pub fn limit_level(&self, tag: &str) -> Option<LimitLevel> {
        let conditions = self.conditions.lock();
        let state = conditions.get(&(tag.to_owned(), LIMIT))?;
        level_of(&state.kind)
    }

    /// Put back conditions read from disk at start (persist.rs); reports nothing.
    pub fn restore(&self, states: Vec<ConditionState>) {
        let mut conditions = self.conditions.lock();
        for state in states {
            conditions.insert((state.source.clone(), state.name), state);
        }
    }

    /// What a source says of its condition `name` now. Returns the condition's new state
    /// when it changed (and publishes it), `None` when it did not: a source first seen
    /// normal is no news, and a disabled condition follows its source silently.
    pub fn observe(
        &self,
        source: &str,
        name: &'static str,
        observed: Observed,
        time: Timestamp,
    ) -> Option<ConditionState> {
        let mut conditions = self.conditions.lock();
        let key = (source.to_owned(), name);
        let previous = conditions.get(&key).cloned();
        let previous = previous.as_ref();
        let same = previous.is_some_and(|p| p.active == observed.active && p.kind == observed.kind);
        if same || (previous.is_none() && !observed.active) {
            return None;
        }
        // A new active state (raised, or another limit level) asks for a new acknowledgement
        // and confirmation; going back to normal, or new limits at the same level, keep them.
        let renewed = observed.active
            && previous.is_none_or(|p| !p.active || level_of(&p.kind) != level_of(&observed.kind));
        if let Some(disabled) = conditions.get_mut(&key).filter(|c| !c.enabled) {
            // A disabled condition reports nothing, but follows its source, so that
            // Enable reports the state it is in then (Part 9, 5.5.4).
            disabled.active = observed.active;
            disabled.kind = observed.kind;
            disabled.severity = observed.severity;
            disabled.message = observed.message;
            if renewed {
                disabled.acked = false;
                disabled.confirmed = false;
            }
            disabled.time = time;
            return None;
        }
        let state = match previous {
            Some(previous) if !renewed => ConditionState {
                active: observed.active,
                kind: observed.kind,
                severity: observed.severity,
                message: observed.message,
                time,
                event_id: new_event_id(),
                ..previous.clone()
            },
            _ => ConditionState {
                name,
                source: source.to_owned(),
                kind: observed.kind,
                enabled: true,
                active: true,
                acked: false,
                confirmed: false,
                severity: observed.severity,
                message: observed.message,
                comment: String::new(),
                time,
                event_id: new_event_id(),
            },
        };
        self.publish(&state);
        conditions.insert(key, state.clone());
        Some(state)
    }

    /// A device's connection changed. Returns the condition's new state when it changed
    /// (an event to report), `None` when it did not (a first "connected" is no news).
    pub fn device_connection(
        &self,
        device: &str,
        connected: bool,
        error: &str,
        time: Timestamp,
    ) -> Option<ConditionState> {
        let message = if connected {
            format!("{device}: communication restored")
        } else if error.is_empty() {
            format!("{device}: communication lost")
        } else {
            format!("{device}: communication lost ({error})")
        };
        self.observe(
            device,
            COMMUNICATION,
            Observed {
                active: !connected,
                kind: ConditionKind::OffNormal,
                severity: COMMUNICATION_SEVERITY,
                message,
            },
            time,
        )
    }

    /// Run `change` on the condition `name` of `source`, publish its new state.
    fn with_condition(
        &self,
        source: &str,
        name: &str,
        time: Timestamp,
        change: impl FnOnce(&mut ConditionState) -> Result<(), Refused>,
    ) -> Result<ConditionState, Refused> {
        let mut conditions = self.conditions.lock();
        let state = conditions
            .iter_mut()
            .find(|((s, n), _)| s == source && *n == name)
            .map(|(_, state)| state)
            .ok_or(Refused::UnknownCondition)?;
        change(state)?;
        state.time = time;
        state.event_id = new_event_id();
        let state = state.clone();
        self.publish(&state);
        Ok(state)
    }

    /// Enable (`enable` true) or Disable the condition `name` of `source` (Part 9, 5.5.4).
    pub fn set_enabled(
        &self,
        source: &str,
        name: &str,
        enable: bool,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        self.with_condition(source, name, time, |state| {
            if state.enabled == enable {
                return Err(if enable {
                    Refused::AlreadyEnabled
                } else {
                    Refused::AlreadyDisabled
                });
            }
            state.enabled = enable;
            Ok(())
        })
    }

    /// Acknowledge(EventId, Comment) on the condition `name` of `source` (Part 9, 5.7.3).
    /// The EventId must be the one of the condition's last event.
    pub fn acknowledge(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        self.change(source, name, event_id, comment, time, Method::Acknowledge)
    }

    /// Confirm(EventId, Comment) (Part 9, 5.7.4): the operator saw the condition return
    /// to normal. Allowed before the acknowledgement too (the standard does not order them).
    pub fn confirm(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        self.change(source, name, event_id, comment, time, Method::Confirm)
    }

    /// AddComment(EventId, Comment) (Part 9, 5.5.5).
    pub fn add_comment(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        self.change(source, name, event_id, comment, time, Method::AddComment)
    }

    fn change(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
        method: Method,
    ) -> Result<ConditionState, Refused> {
        self.with_condition(source, name, time, |state| {
            if !state.enabled {
                return Err(Refused::Disabled);
            }
            if state.event_id != event_id {
                return Err(Refused::EventIdUnknown);
            }
            match method {
                Method::Acknowledge if state.acked => return Err(Refused::AlreadyAcked),
                Method::Acknowledge => state.acked = true,
                Method::Confirm if state.confirmed => return Err(Refused::AlreadyConfirmed),
                Method::Confirm => state.confirmed = true,
                Method::AddComment => {}
            }
            if !comment.is_empty() || method == Method::AddComment {
                state.comment = comment.to_owned();
            }
            Ok(())
        })
    }
}

fn level_of(kind: &ConditionKind) -> Option<LimitLevel> {
    match kind {
        ConditionKind::ExclusiveLimit { level, .. } => *level,
        ConditionKind::OffNormal => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Acknowledge,
    Confirm,
    AddComment,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: i64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[test]
    fn a_lost_device_raises_an_unacked_alarm_and_its_return_deactivates_it() {
        let alarms = Alarms::default();
        let lost = alarms
            .device_connection("Stations/P/press", false, "refused", at(1))
            .expect("raised");
        assert!(lost.active && !lost.acked && !lost.confirmed && lost.enabled);
        assert!(lost.retain());
        assert_eq!(lost.severity, 700);
        assert_eq!(
            lost.message,
            "Stations/P/press: communication lost (refused)"
        );
        // Still lost: no news.
        assert!(alarms
            .device_connection("Stations/P/press", false, "", at(2))
            .is_none());
        let back = alarms
            .device_connection("Stations/P/press", true, "", at(3))
            .expect("cleared");
        assert!(!back.active && !back.acked);
        // Not acknowledged yet: still retained.
        assert!(back.retain());
        assert_eq!(
            alarms.acknowledge("Stations/P/press", COMMUNICATION, b"nope", "", at(4)),
            Err(Refused::EventIdUnknown)
        );
        let acked = alarms
            .acknowledge(
                "Stations/P/press",
                COMMUNICATION,
                &back.event_id,
                "seen",
                at(5),
            )
            .expect("acknowledged");
        // Acknowledged but not confirmed: still retained.
        assert!(acked.acked && !acked.confirmed && acked.retain());
        assert_eq!(acked.comment, "seen");
        assert_eq!(
            alarms.confirm("Stations/P/press", COMMUNICATION, &back.event_id, "", at(5)),
            Err(Refused::EventIdUnknown)
        );
        let confirmed = alarms
            .confirm(
                "Stations/P/press",
                COMMUNICATION,
                &acked.event_id,
                "",
                at(5),
            )
            .expect("confirmed");
        assert!(confirmed.confirmed && !confirmed.retain());
        assert_eq!(confirmed.comment, "seen");
        assert_eq!(
            alarms.confirm(
                "Stations/P/press",
                COMMUNICATION,
                &confirmed.event_id,
                "",
                at(6)
            ),
            Err(Refused::AlreadyConfirmed)
        );
        assert_eq!(
            alarms.acknowledge(
                "Stations/P/press",
                COMMUNICATION,
                &confirmed.event_id,
                "",
                at(6)
            ),
            Err(Refused::AlreadyAcked)
        );
    }

    #[test]
    fn a_comment_makes_a_new_state_and_needs_the_last_event_id() {
        let alarms = Alarms::default();
        let d = "Stations/P/press";
        let lost = alarms
            .device_connection(d, false, "", at(1))
            .expect("raised");
        let commented = alarms
            .add_comment(d, COMMUNICATION, &lost.event_id, "later", at(2))
            .expect("commented");
        assert_eq!(commented.comment, "later");
        assert!(!commented.acked);
        assert_ne!(commented.event_id, lost.event_id);
        assert_eq!(
            alarms.add_comment(d, COMMUNICATION, &lost.event_id, "again", at(3)),
            Err(Refused::EventIdUnknown)
        );
        assert_eq!(
            alarms.add_comment("Stations/P/other", COMMUNICATION, &lost.event_id, "", at(3)),
            Err(Refused::UnknownCondition)
        );
    }

    #[test]
    fn a_disabled_condition_reports_nothing_and_enable_reports_where_it_is() {
        let alarms = Alarms::default();
        let d = "Stations/P/press";
        let lost = alarms
            .device_connection(d, false, "", at(1))
            .expect("raised");
        let disabled = alarms
            .set_enabled(d, COMMUNICATION, false, at(2))
            .expect("disabled");
        assert!(!disabled.enabled && !disabled.retain());
        assert_eq!(
            alarms.set_enabled(d, COMMUNICATION, false, at(3)),
            Err(Refused::AlreadyDisabled)
        );
        assert_eq!(
            alarms.acknowledge(d, COMMUNICATION, &disabled.event_id, "", at(3)),
            Err(Refused::Disabled)
        );
        assert!(alarms.device_connection(d, true, "", at(4)).is_none());
        let enabled = alarms
            .set_enabled(d, COMMUNICATION, true, at(5))
            .expect("enabled");
        assert!(enabled.enabled && !enabled.active && !enabled.acked);
        assert_ne!(enabled.event_id, lost.event_id);
        assert_eq!(
            alarms.set_enabled(d, COMMUNICATION, true, at(6)),
            Err(Refused::AlreadyEnabled)
        );
    }

    #[test]
    fn a_device_that_connects_first_is_no_alarm() {
        let alarms = Alarms::default();
        assert!(alarms
            .device_connection("Stations/P/press", true, "", at(1))
            .is_none());
    }
}
