//! Points → InfluxDB line protocol, one line per point, appended to a caller-owned buffer.
//!
//! Schema (the README, section "InfluxDB sink"): one measurement; tags `device`, `site`, `station`, `stop`,
//! `tag` (sorted by key, as InfluxDB stores them; empty ones left out); fields
//! - `value` (float): every numeric value (bool as 0/1, integers widened, times as Unix ms),
//! - `text` (string): text values,
//! - `quality` (integer): the OPC UA status code, 0 = Good;
//!
//! and the source timestamp in nanoseconds. Each field key keeps one type whatever the tag,
//! so InfluxDB never sees a field type conflict coming from the gateway.
//!
//! The tag part of a line never changes for a tag, so it is escaped once at start; encoding
//! a point is then a copy, two number formats and no allocation.

use fabrique_adapters::{PointUpdate, Timestamp, Value};

use crate::streams::TagLabels;

/// Escaped `measurement,tag=…` prefixes, one per `TagId`.
pub struct LineEncoder {
    prefixes: Vec<Box<[u8]>>,
}

impl LineEncoder {
    /// `labels` is indexed by `TagId` (see [`crate::streams::labels`]).
    pub fn new(measurement: &str, site: &str, stop: &str, labels: &[TagLabels]) -> Self {
        let prefixes = labels
            .iter()
            .map(|l| {
                if l.path.is_empty() {
                    // A retired tag (see `crate::streams::labels`): nothing to write.
                    return Box::default();
                }
                let mut p = Vec::with_capacity(96);
                escape_measurement(&mut p, measurement);
                let tags = [
                    ("device", l.device.as_deref().unwrap_or("")),
                    ("site", site),
                    ("station", l.station.as_deref().unwrap_or("")),
                    ("stop", stop),
                    ("tag", l.tag.as_str()),
                ];
                for (key, value) in tags {
                    if !value.is_empty() {
                        p.push(b',');
                        p.extend_from_slice(key.as_bytes());
                        p.push(b'=');
                        escape_tag_value(&mut p, value);
                    }
                }
                p.into_boxed_slice()
            })
            .collect();
        LineEncoder { prefixes }
    }

    /// Appends the line of `update` (with its `\n`) to `buf`. A point with a null timestamp
    /// gets `now`. Returns `false`, leaving `buf` as it was, for a tag the encoder does not know.
    pub fn encode(&self, buf: &mut Vec<u8>, update: &PointUpdate, now: Timestamp) -> bool {
        let Some(prefix) = self.prefixes.get(update.tag.index()) else {
            return false;
        };
        if prefix.is_empty() {
            return false;
        }
        buf.extend_from_slice(prefix);
        let point = &update.point;
        let mut ints = itoa::Buffer::new();
        let mut sep = b' ';
        match &point.value {
            Some(Value::Text(s)) => {
                buf.extend_from_slice(b" text=\"");
                escape_string_field(buf, s);
                buf.push(b'"');
                sep = b',';
            }
            Some(value) => {
                let x = match *value {
                    Value::Time(t) => t.as_nanos() as f64 / 1e6,
                    ref other => other.as_f64().unwrap_or(f64::NAN),
                };
                // Line protocol has no NaN or infinity: such a point keeps its quality only.
                if x.is_finite() {
                    buf.extend_from_slice(b" value=");
                    let mut floats = ryu::Buffer::new();
                    buf.extend_from_slice(floats.format_finite(x).as_bytes());
                    sep = b',';
                }
            }
            None => {}
        }
        buf.push(sep);
        buf.extend_from_slice(b"quality=");
        buf.extend_from_slice(ints.format(point.quality.0).as_bytes());
        buf.extend_from_slice(b"i ");
        let t = if point.timestamp.is_null() {
            now
        } else {
            point.timestamp
        };
        buf.extend_from_slice(ints.format(t.as_nanos()).as_bytes());
        buf.push(b'\n');
        true
    }
}

pub(crate) fn escape_measurement(buf: &mut Vec<u8>, s: &str) {
    escape(buf, s, |c| matches!(c, b',' | b' '));
}

pub(crate) fn escape_tag_value(buf: &mut Vec<u8>, s: &str) {
    escape(buf, s, |c| matches!(c, b',' | b'=' | b' '));
}

pub(crate) fn escape_string_field(buf: &mut Vec<u8>, s: &str) {
    escape(buf, s, |c| matches!(c, b'"' | b'\\'));
}

/// Backslash before each byte `special` names; line breaks (which end a line whatever the
/// quoting in some parsers) become the two characters `\n` / `\r`.
///
/// InfluxDB's scanner takes the byte after any backslash with it, so a backslash of the text
/// that ends it, or comes before one of those escapes, would swallow the separator or the
/// escape after it (found by the `line_protocol` fuzz target): such a backslash is doubled.
fn escape(buf: &mut Vec<u8>, s: &str, special: impl Fn(u8) -> bool) {
    let bytes = s.as_bytes();
    let escaped = |c: u8| special(c) || c == b'\n' || c == b'\r' || c == b'\\';
    if !bytes.iter().any(|&c| escaped(c)) {
        buf.extend_from_slice(bytes);
        return;
    }
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            c if special(c) => {
                buf.push(b'\\');
                buf.push(c);
            }
            b'\\' if bytes.get(i + 1).is_none_or(|&next| escaped(next)) => {
                buf.extend_from_slice(b"\\\\")
            }
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabrique_adapters::{Point, Quality, TagId};

    fn encoder() -> LineEncoder {
        let labels = [
            TagLabels::of("Stations/Printing/Printer3D/NozzleTemperature"),
            TagLabels::of("Orders/Submitted"),
            TagLabels::of("Stations/My Station/a,b=c/Status/Text"),
        ];
        LineEncoder::new("fabrique", "fabrique-hdf", "Lens", &labels)
    }

    fn line(tag: u32, value: Option<Value>, quality: Quality, t: i64) -> String {
        let mut buf = Vec::new();
        let update = PointUpdate {
            tag: TagId(tag),
            point: Point {
                value,
                quality,
                timestamp: Timestamp::from_nanos(t),
            },
        };
        assert!(encoder().encode(&mut buf, &update, Timestamp::from_nanos(42)));
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn a_device_float_has_every_tag_sorted() {
        assert_eq!(
            line(
                0,
                Some(Value::Float(215.5)),
                Quality::GOOD,
                1_700_000_000_123_456_789
            ),
            "fabrique,device=Printer3D,site=fabrique-hdf,station=Printing,stop=Lens,\
             tag=NozzleTemperature value=215.5,quality=0i 1700000000123456789\n"
        );
    }

    #[test]
    fn line_tags_have_no_station_or_device_and_numbers_are_floats() {
        assert_eq!(
            line(1, Some(Value::UInt(12)), Quality::GOOD, 5),
            "fabrique,site=fabrique-hdf,stop=Lens,tag=Orders/Submitted value=12.0,quality=0i 5\n"
        );
        assert!(line(1, Some(Value::Bool(true)), Quality::GOOD, 5).contains(" value=1.0,"));
        assert!(line(1, Some(Value::Int(-3)), Quality::GOOD, 5).contains(" value=-3.0,"));
        assert!(line(
            1,
            Some(Value::Time(Timestamp::from_nanos(2_000_000))),
            Quality::GOOD,
            5
        )
        .contains(" value=2.0,"));
    }

    #[test]
    fn tag_values_and_strings_are_escaped() {
        let l = line(
            2,
            Some(Value::text("say \"hi\" \\ bye\nnow")),
            Quality::UNCERTAIN_LAST_USABLE_VALUE,
            7,
        );
        assert_eq!(
            l,
            "fabrique,device=a\\,b\\=c,site=fabrique-hdf,station=My\\ Station,stop=Lens,\
             tag=Status/Text text=\"say \\\"hi\\\" \\\\ bye\\nnow\",quality=1083179008i 7\n"
        );
        let mut buf = Vec::new();
        escape_measurement(&mut buf, "my m,x=1");
        assert_eq!(buf, b"my\\ m\\,x=1");
    }

    #[test]
    fn a_backslash_never_swallows_a_separator_or_an_escape() {
        // Found by the `line_protocol` fuzz target: `tag=^\ value=…` lost its field set.
        let tail = LineEncoder::new("m\\", "s", "", &[TagLabels::of("Line/A\\")]);
        let mut buf = Vec::new();
        let update = PointUpdate {
            tag: TagId(0),
            point: Point {
                value: Some(Value::Float(1.0)),
                quality: Quality::GOOD,
                timestamp: Timestamp::from_nanos(3),
            },
        };
        assert!(tail.encode(&mut buf, &update, Timestamp::NULL));
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "m\\\\,site=s,tag=Line/A\\\\ value=1.0,quality=0i 3\n"
        );
        let mut buf = Vec::new();
        escape_tag_value(&mut buf, "a\\,b\\c\\\\ d\\\n");
        // `\,` → `\\\,`; `\c` stays; `\\ ` → `\\\\\\ `; `\` + line break → `\\\n`.
        assert_eq!(buf, b"a\\\\\\,b\\c\\\\\\\\\\ d\\\\\\n");
    }

    #[test]
    fn no_value_or_non_finite_keeps_the_quality_and_null_time_gets_now() {
        assert_eq!(
            line(1, None, Quality::BAD_NO_COMMUNICATION, 0),
            "fabrique,site=fabrique-hdf,stop=Lens,tag=Orders/Submitted quality=2150694912i 42\n"
        );
        assert!(line(1, Some(Value::Float(f64::NAN)), Quality::GOOD, 9)
            .ends_with("Orders/Submitted quality=0i 9\n"));
    }

    #[test]
    fn empty_stop_is_left_out_and_unknown_tags_write_nothing() {
        let e = LineEncoder::new("m", "s", "", &[TagLabels::of("Line/State")]);
        let mut buf = b"x".to_vec();
        let mut update = PointUpdate {
            tag: TagId(0),
            point: Point {
                value: Some(Value::Float(1.0)),
                quality: Quality::GOOD,
                timestamp: Timestamp::from_nanos(1),
            },
        };
        assert!(e.encode(&mut buf, &update, Timestamp::NULL));
        assert_eq!(buf, b"xm,site=s,tag=Line/State value=1.0,quality=0i 1\n");
        update.tag = TagId(1);
        assert!(!e.encode(&mut buf, &update, Timestamp::NULL));
        assert_eq!(buf.len(), 48);
    }
}

/// `cargo test --release -p fabrique-gateway encode_throughput -- --ignored --nocapture`:
/// the figure in BENCHMARKS.md ("InfluxDB line protocol").
#[cfg(test)]
mod bench {
    use super::*;
    use fabrique_adapters::{Point, Quality, TagId};
    use std::time::Instant;

    #[test]
    #[ignore = "benchmark; run with --release"]
    fn encode_throughput() {
        const TAGS: u32 = 100_000;
        const POINTS: usize = 1_000_000;
        const BATCH: usize = 5000;
        let labels: Vec<TagLabels> = (0..TAGS)
            .map(|i| TagLabels::of(&format!("Stations/Synthetic/Load/T{i:06}")))
            .collect();
        let encoder = LineEncoder::new("fabrique", "fabrique-hdf", "Lens", &labels);
        let t0 = Timestamp::now();
        let updates: Vec<PointUpdate> = (0..POINTS)
            .map(|i| PointUpdate {
                tag: TagId(i as u32 % TAGS),
                point: Point {
                    value: Some(Value::Float(20.0 + (i % 1000) as f64 * 0.137)),
                    quality: Quality::GOOD,
                    timestamp: Timestamp::from_nanos(t0.as_nanos() + i as i64 * 1000),
                },
            })
            .collect();
        let mut buf = Vec::with_capacity(BATCH * 128);
        let (mut bytes, mut best) = (0usize, f64::INFINITY);
        for _ in 0..5 {
            let start = Instant::now();
            for chunk in updates.chunks(BATCH) {
                buf.clear();
                for u in chunk {
                    encoder.encode(&mut buf, u, t0);
                }
                bytes += buf.len();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "encoded {POINTS} points in {:.1} ms: {:.0} points/s on one core, {:.0} bytes/point",
            best * 1e3,
            POINTS as f64 / best,
            bytes as f64 / (5 * POINTS) as f64
        );
    }
}
