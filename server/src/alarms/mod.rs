//! Alarms and Conditions (OPC 10000-9): the gateway's own condition runtime.
//!
//! async-opcua 0.19 has the condition event types but no runtime (no state, Retain or
//! acknowledgement), so the state of every condition lives here, and each change of it is
//! reported as one event through the event path of `opcua/events.rs`.
//!
//! Today: one `OffNormalAlarmType` condition per device, for its communication
//! (`<device>/Status/Connected`): active while the device is disconnected.

pub mod event;
pub mod http;
pub mod methods;
pub mod north;

use std::collections::HashMap;

use fabrique_adapters::Timestamp;
use parking_lot::Mutex;

/// The state of one condition (a single branch: the gateway keeps no previous states).
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionState {
    /// The condition's name (`ConditionName`), e.g. `Communication`.
    pub name: &'static str,
    /// The object the condition is about: a device path `Stations/<station>/<device>`.
    pub source: String,
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
            Refused::Disabled => StatusCode::BadConditionDisabled,
            Refused::AlreadyEnabled => StatusCode::BadConditionAlreadyEnabled,
            Refused::AlreadyDisabled => StatusCode::BadConditionAlreadyDisabled,
        }
    }
}

/// State changes a slow subscriber may fall behind by before it lags (and resyncs).
const CHANGES_CAPACITY: usize = 1024;

/// Every condition's state, by (source, condition name).
pub struct Alarms {
    conditions: Mutex<HashMap<(String, &'static str), ConditionState>>,
    /// Every reported state change, for what goes north (alarms/north.rs).
    changes: tokio::sync::broadcast::Sender<ConditionState>,
}

impl Default for Alarms {
    fn default() -> Self {
        Alarms {
            conditions: Mutex::default(),
            changes: tokio::sync::broadcast::channel(CHANGES_CAPACITY).0,
        }
    }
}

impl Alarms {
    /// Every state change from now on, as the event that reports it says it (the one place
    /// every condition kind reports through: `reported`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ConditionState> {
        self.changes.subscribe()
    }

    /// Every condition's current state (an alarm list's starting point).
    pub fn conditions(&self) -> Vec<ConditionState> {
        self.conditions.lock().values().cloned().collect()
    }

    /// A condition's new state, to its subscribers; returns it.
    fn reported(&self, state: ConditionState) -> ConditionState {
        // No subscriber is no error: nothing goes north then.
        let _ = self.changes.send(state.clone());
        state
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
        let mut conditions = self.conditions.lock();
        let key = (device.to_owned(), COMMUNICATION);
        let previous = conditions.get(&key).cloned();
        let was_active = previous.as_ref().is_some_and(|c| c.active);
        if was_active != connected {
            // Active already while lost, or inactive while connected: nothing to report.
            return None;
        }
        if let Some(disabled) = conditions.get_mut(&key).filter(|c| !c.enabled) {
            // A disabled condition reports nothing, but follows its source, so that
            // Enable reports the state it is in then (Part 9, 5.5.4).
            disabled.active = !connected;
            if !connected {
                disabled.acked = false;
                disabled.confirmed = false;
            }
            disabled.time = time;
            return None;
        }
        let message = if connected {
            format!("{device}: communication restored")
        } else if error.is_empty() {
            format!("{device}: communication lost")
        } else {
            format!("{device}: communication lost ({error})")
        };
        let state = match previous {
            // Going active asks for a new acknowledgement and confirmation.
            _ if !connected => ConditionState {
                name: COMMUNICATION,
                source: device.to_owned(),
                enabled: true,
                active: true,
                acked: false,
                confirmed: false,
                severity: COMMUNICATION_SEVERITY,
                message,
                comment: String::new(),
                time,
                event_id: new_event_id(),
            },
            Some(previous) => ConditionState {
                active: false,
                message,
                time,
                event_id: new_event_id(),
                ..previous.clone()
            },
            None => return None,
        };
        conditions.insert(key, state.clone());
        Some(self.reported(state))
    }

    /// Enable (`enable` true) or Disable the condition `name` of `source` (Part 9, 5.5.4).
    pub fn set_enabled(
        &self,
        source: &str,
        name: &str,
        enable: bool,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        let mut conditions = self.conditions.lock();
        let state = conditions
            .iter_mut()
            .find(|((s, n), _)| s == source && *n == name)
            .map(|(_, state)| state)
            .ok_or(Refused::UnknownCondition)?;
        if state.enabled == enable {
            return Err(if enable {
                Refused::AlreadyEnabled
            } else {
                Refused::AlreadyDisabled
            });
        }
        state.enabled = enable;
        state.time = time;
        state.event_id = new_event_id();
        Ok(self.reported(state.clone()))
    }

    /// Acknowledge(EventId, Comment) (`acknowledge` true) or AddComment(EventId, Comment) on
    /// the condition `name` of `source` (Part 9, 5.7.3 and 5.5.5). The EventId must be the
    /// one of the condition's last event.
    pub fn acknowledge(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        self.change(source, name, event_id, comment, time, true)
    }

    pub fn add_comment(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
    ) -> Result<ConditionState, Refused> {
        self.change(source, name, event_id, comment, time, false)
    }

    fn change(
        &self,
        source: &str,
        name: &str,
        event_id: &[u8],
        comment: &str,
        time: Timestamp,
        acknowledge: bool,
    ) -> Result<ConditionState, Refused> {
        let mut conditions = self.conditions.lock();
        let state = conditions
            .iter_mut()
            .find(|((s, n), _)| s == source && *n == name)
            .map(|(_, state)| state)
            .ok_or(Refused::UnknownCondition)?;
        if !state.enabled {
            return Err(Refused::Disabled);
        }
        if state.event_id != event_id {
            return Err(Refused::EventIdUnknown);
        }
        if acknowledge {
            if state.acked {
                return Err(Refused::AlreadyAcked);
            }
            state.acked = true;
            // Confirm is not served yet: an acknowledged condition needs no confirmation.
            state.confirmed = true;
        }
        if !comment.is_empty() || !acknowledge {
            state.comment = comment.to_owned();
        }
        state.time = time;
        state.event_id = new_event_id();
        Ok(self.reported(state.clone()))
    }
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
        assert!(acked.acked && !acked.retain());
        assert_eq!(acked.comment, "seen");
        assert_eq!(
            alarms.acknowledge(
                "Stations/P/press",
                COMMUNICATION,
                &acked.event_id,
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
