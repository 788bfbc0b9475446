//! The point model: one value of one tag, with its quality and source timestamp.
//!
//! Kept free of any protocol crate so that adapters, sinks and the OPC UA server share it
//! without conversions on the hot path; the OPC UA edge converts once, when it publishes.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::tag::TagId;

/// A tag value. Integers are widened to 64 bits here; the tag's declared
/// [`DataType`](crate::DataType) says how it is presented to clients.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Arc<str>),
    Time(Timestamp),
}

impl Value {
    pub fn text(s: impl AsRef<str>) -> Self {
        Value::Text(Arc::from(s.as_ref()))
    }

    /// The value as a float, for indicators and range checks; `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            Value::Text(_) | Value::Time(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
            Value::Time(t) => write!(f, "{}", t.as_nanos()),
        }
    }
}

/// Quality of a point as an OPC UA status code (Part 4, 7.39), so that every consumer speaks
/// the same language as SCADA clients. Only the codes the gateway produces are named here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quality(pub u32);

impl Quality {
    pub const GOOD: Quality = Quality(0);
    pub const UNCERTAIN_LAST_USABLE_VALUE: Quality = Quality(0x4090_0000);
    pub const BAD_COMMUNICATION_ERROR: Quality = Quality(0x8005_0000);
    pub const BAD_NO_COMMUNICATION: Quality = Quality(0x8031_0000);
    pub const BAD_WAITING_FOR_INITIAL_DATA: Quality = Quality(0x8032_0000);
    pub const BAD_OUT_OF_SERVICE: Quality = Quality(0x808D_0000);

    pub fn is_good(self) -> bool {
        self.0 & 0xC000_0000 == 0
    }

    pub fn is_bad(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }

    /// `Good`, `Uncertain` or `Bad`: the severity, for payloads meant for people.
    pub fn severity(self) -> &'static str {
        if self.is_bad() {
            "Bad"
        } else if self.is_good() {
            "Good"
        } else {
            "Uncertain"
        }
    }
}

/// Nanoseconds since the Unix epoch (UTC). Copy, comparable and cheap to carry on every point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// "Not set": the Unix epoch itself, which no real event of this gateway carries.
    pub const NULL: Timestamp = Timestamp(0);

    pub fn is_null(self) -> bool {
        self.0 == 0
    }

    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    pub fn plus_secs_f64(self, secs: f64) -> Self {
        Timestamp(self.0 + (secs * 1e9) as i64)
    }

    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1e9
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let nanos = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(before) => -(before.duration().as_nanos() as i64),
        };
        Timestamp(nanos)
    }
}

/// The latest state of one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub value: Option<Value>,
    pub quality: Quality,
    pub timestamp: Timestamp,
}

impl Point {
    /// What a tag holds before its device has said anything.
    pub fn initial() -> Self {
        Point {
            value: None,
            quality: Quality::BAD_WAITING_FOR_INITIAL_DATA,
            timestamp: Timestamp::default(),
        }
    }
}

/// One change on the bus: a new point for a tag.
#[derive(Debug, Clone, PartialEq)]
pub struct PointUpdate {
    pub tag: TagId,
    pub point: Point,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_severity_follows_the_top_two_bits() {
        assert_eq!(Quality::GOOD.severity(), "Good");
        assert_eq!(Quality::UNCERTAIN_LAST_USABLE_VALUE.severity(), "Uncertain");
        assert_eq!(Quality::BAD_NO_COMMUNICATION.severity(), "Bad");
        assert!(!Quality::BAD_COMMUNICATION_ERROR.is_good());
    }

    #[test]
    fn timestamps_before_the_epoch_are_negative() {
        let t = UNIX_EPOCH - std::time::Duration::from_secs(1);
        assert_eq!(Timestamp::from(t).as_nanos(), -1_000_000_000);
    }
}
