//! What goes on the wire (the JSON payloads) and which changes go at all (deadband and
//! minimum interval). Pure logic, tested here without a broker.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat};
use fabrique_adapters::{Point, Quality, TagId, Timestamp, Value};
use serde::ser::{Serialize, Serializer};

/// RFC 3339 in UTC with nanoseconds: `2026-11-22T05:57:54.123456789Z`; `None` when not set.
pub fn rfc3339(t: Timestamp) -> Option<String> {
    (!t.is_null()).then(|| {
        DateTime::from_timestamp_nanos(t.as_nanos()).to_rfc3339_opts(SecondsFormat::Nanos, true)
    })
}

/// A tag value as JSON: numbers, booleans and strings as such, times as RFC 3339 strings,
/// non-finite floats (which JSON cannot carry) as `null`.
pub struct JsonValue<'a>(pub Option<&'a Value>);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(Value::Bool(b)) => s.serialize_bool(*b),
            Some(Value::Int(i)) => s.serialize_i64(*i),
            Some(Value::UInt(u)) => s.serialize_u64(*u),
            Some(Value::Float(f)) if f.is_finite() => s.serialize_f64(*f),
            Some(Value::Float(_)) => s.serialize_none(),
            Some(Value::Text(t)) => s.serialize_str(t),
            Some(Value::Time(t)) => match rfc3339(*t) {
                Some(text) => s.serialize_str(&text),
                None => s.serialize_none(),
            },
        }
    }
}

#[derive(serde::Serialize)]
struct Payload<'a> {
    value: JsonValue<'a>,
    quality: &'static str,
    status: u32,
    ts: Option<String>,
    /// `stop_in_payload`: the stop the truck is at when the value is published.
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a str>,
}

/// `{"value": …, "quality": "Good", "status": 0, "ts": "…"}` (and `"stop": "…"` when given),
/// see the README, section "MQTT publisher".
pub fn encode(point: &Point, stop: Option<&str>) -> Vec<u8> {
    let payload = Payload {
        value: JsonValue(point.value.as_ref()),
        quality: point.quality.severity(),
        status: point.quality.0,
        ts: rfc3339(point.timestamp),
        stop,
    };
    // Serialising plain data into a Vec cannot fail; keep a valid document regardless.
    serde_json::to_vec(&payload).unwrap_or_else(|_| b"{\"value\":null}".to_vec())
}

/// The numeric value a deadband compares; booleans, text and times always pass.
fn numeric(value: Option<&Value>) -> Option<f64> {
    match value? {
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

#[derive(Default)]
struct TagState {
    /// Numeric value and quality of the last message published.
    sent: Option<(Option<f64>, Quality)>,
    sent_at: Option<Instant>,
    /// The latest change, held until the tag's interval elapses.
    held: Option<Point>,
}

/// Per-tag deadband and minimum interval. A held change is replaced by newer ones and
/// released when the interval elapses, so the last value published is never a stale one.
pub struct Throttle {
    deadband: f64,
    min_interval: Duration,
    tags: Vec<TagState>,
    due: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl Throttle {
    pub fn new(tags: usize, deadband: f64, min_interval: Duration) -> Self {
        Throttle {
            deadband,
            min_interval,
            tags: (0..tags).map(|_| TagState::default()).collect(),
            due: BinaryHeap::new(),
        }
    }

    /// Make room for tags up to `tags` (a reload added some).
    pub fn grow(&mut self, tags: usize) {
        if tags > self.tags.len() {
            self.tags.resize_with(tags, TagState::default);
        }
    }

    /// Whether anything filters at all; without, every change is published as it comes.
    pub fn is_pass_through(&self) -> bool {
        self.deadband == 0.0 && self.min_interval.is_zero()
    }

    /// A change of `tag`: `Some` to publish it now.
    pub fn offer(&mut self, tag: TagId, point: Point, now: Instant) -> Option<Point> {
        if self.is_pass_through() {
            return Some(point);
        }
        let interval = self.min_interval;
        let deadband = self.deadband;
        let state = self.tags.get_mut(tag.index())?;
        if let Some(held) = &mut state.held {
            *held = point;
            return None;
        }
        if !passes(state, &point, deadband) {
            return None;
        }
        if let Some(at) = state.sent_at {
            if now.duration_since(at) < interval {
                state.held = Some(point);
                self.due.push(Reverse((at + interval, tag.index() as u32)));
                return None;
            }
        }
        record(state, &point, now);
        Some(point)
    }

    /// Held changes whose interval has elapsed, still checked against the deadband.
    pub fn release(&mut self, now: Instant, out: &mut Vec<(TagId, Point)>) {
        while let Some(&Reverse((at, index))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(state) = self.tags.get_mut(index as usize) else {
                continue;
            };
            if let Some(point) = state.held.take() {
                if passes(state, &point, self.deadband) {
                    record(state, &point, now);
                    out.push((TagId(index), point));
                }
            }
        }
    }
}

fn passes(state: &TagState, point: &Point, deadband: f64) -> bool {
    let Some((last, quality)) = state.sent else {
        return true;
    };
    if deadband == 0.0 || quality != point.quality {
        return true;
    }
    match (last, numeric(point.value.as_ref())) {
        (Some(last), Some(new)) => (new - last).abs() >= deadband,
        _ => true,
    }
}

fn record(state: &mut TagState, point: &Point, now: Instant) {
    state.sent = Some((numeric(point.value.as_ref()), point.quality));
    state.sent_at = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(v: f64) -> Point {
        Point {
            value: Some(Value::Float(v)),
            quality: Quality::GOOD,
            timestamp: Timestamp::from_nanos(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn payloads_follow_the_documented_schema() {
        let with_stop: serde_json::Value =
            serde_json::from_slice(&encode(&good(21.5), Some("Lens"))).unwrap();
        assert_eq!(with_stop["stop"], "Lens");
        let json: serde_json::Value = serde_json::from_slice(&encode(&good(21.5), None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"value": 21.5, "quality": "Good", "status": 0,
                               "ts": "2023-11-14T22:13:20.123456789Z"})
        );
        let bad = Point::initial();
        let json: serde_json::Value = serde_json::from_slice(&encode(&bad, None)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"value": null, "quality": "Bad", "status": 0x8032_0000u32,
                               "ts": null})
        );
        let mut p = good(f64::NAN);
        p.value = Some(Value::Time(Timestamp::from_nanos(1_000)));
        let json: serde_json::Value = serde_json::from_slice(&encode(&p, None)).unwrap();
        assert_eq!(json["value"], "1970-01-01T00:00:00.000001000Z");
        p.value = Some(Value::Float(f64::INFINITY));
        let json: serde_json::Value = serde_json::from_slice(&encode(&p, None)).unwrap();
        assert_eq!(json["value"], serde_json::Value::Null);
    }

    #[test]
    fn deadband_drops_small_numeric_changes_but_not_quality_changes() {
        let t0 = Instant::now();
        let tag = TagId(0);
        let mut th = Throttle::new(1, 1.0, Duration::ZERO);
        assert!(th.offer(tag, good(10.0), t0).is_some());
        assert!(th.offer(tag, good(10.5), t0).is_none());
        assert!(th.offer(tag, good(11.0), t0).is_some());
        let mut uncertain = good(11.2);
        uncertain.quality = Quality::UNCERTAIN_LAST_USABLE_VALUE;
        assert!(th.offer(tag, uncertain, t0).is_some());
    }

    #[test]
    fn min_interval_holds_the_latest_change_and_releases_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = (TagId(0), TagId(1));
        let mut th = Throttle::new(2, 0.0, ms(100));
        assert!(th.offer(a, good(1.0), t0).is_some());
        assert!(th.offer(a, good(2.0), t0 + ms(10)).is_none());
        assert!(th.offer(a, good(3.0), t0 + ms(20)).is_none());
        assert!(th.offer(b, good(7.0), t0 + ms(20)).is_some());
        let mut out = Vec::new();
        th.release(t0 + ms(99), &mut out);
        assert!(out.is_empty());
        th.release(t0 + ms(100), &mut out);
        assert_eq!(out, vec![(a, good(3.0))]);
        // Sent at 100 ms: the next change waits until 200 ms.
        assert!(th.offer(a, good(4.0), t0 + ms(150)).is_none());
        out.clear();
        th.release(t0 + ms(200), &mut out);
        assert_eq!(out, vec![(a, good(4.0))]);
        assert!(th.offer(a, good(5.0), t0 + ms(300)).is_some());
    }
}
