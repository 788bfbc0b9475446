//! InfluxDB line protocol: whatever the names (measurement, site, stop, station, device, tag)
//! and the value, the encoder writes exactly one line that parses back, with InfluxDB's own
//! scanning rules, to the same tags, fields and timestamp. A property, not just "no panic".
#![no_main]

use arbitrary::Arbitrary;
use fabrique_adapters::{Point, PointUpdate, Quality, TagId, Timestamp, Value};
use fabrique_gateway::streams::influxdb::line::LineEncoder;
use fabrique_gateway::streams::TagLabels;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum RawValue {
    None,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    Time(i64),
}

#[derive(Debug, Arbitrary)]
struct Input {
    measurement: String,
    site: String,
    stop: String,
    station: Option<String>,
    device: Option<String>,
    tag: String,
    value: RawValue,
    quality: u32,
    timestamp: i64,
}

/// InfluxDB's scanner: a backslash takes the next byte with it, whatever it is.
fn scan_until(line: &[u8], mut i: usize, stop: impl Fn(u8) -> bool) -> usize {
    while i < line.len() && !stop(line[i]) {
        i += if line[i] == b'\\' { 2 } else { 1 };
    }
    i.min(line.len())
}

/// InfluxDB's unescaping: `\` + one of `specials` is that byte; any other `\` is literal.
fn unescape(s: &[u8], specials: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 1 < s.len() && specials.contains(&s[i + 1]) {
            out.push(s[i + 1]);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// What a name reads back as when it has no backslash: line breaks become `\n`/`\r` text.
fn expected(s: &str) -> Vec<u8> {
    s.replace('\n', "\\n").replace('\r', "\\r").into_bytes()
}

fuzz_target!(|input: Input| {
    // The configuration refuses a blank measurement (`influxdb.measurement`); a tag always
    // has a name.
    if input.tag.is_empty() || input.measurement.trim().is_empty() {
        return;
    }
    let labels = [TagLabels {
        station: input.station.clone(),
        device: input.device.clone(),
        tag: input.tag.clone(),
        path: "Stations/S/D/T".into(),
    }];
    let encoder = LineEncoder::new(&input.measurement, &input.site, &input.stop, &labels);
    let value = match &input.value {
        RawValue::None => None,
        RawValue::Bool(b) => Some(Value::Bool(*b)),
        RawValue::Int(i) => Some(Value::Int(*i)),
        RawValue::UInt(u) => Some(Value::UInt(*u)),
        RawValue::Float(f) => Some(Value::Float(*f)),
        RawValue::Text(s) => Some(Value::text(s)),
        RawValue::Time(t) => Some(Value::Time(Timestamp::from_nanos(*t))),
    };
    let update = PointUpdate {
        tag: TagId(0),
        point: Point {
            value: value.clone(),
            quality: Quality(input.quality),
            timestamp: Timestamp::from_nanos(input.timestamp),
        },
    };
    let now = Timestamp::from_nanos(1_700_000_000_000_000_000);
    let mut buf = Vec::new();
    assert!(encoder.encode(&mut buf, &update, now));

    // One line, ended by its only line break.
    assert_eq!(buf.last(), Some(&b'\n'));
    let line = &buf[..buf.len() - 1];
    assert!(!line.contains(&b'\n') && !line.contains(&b'\r'), "{line:?}");

    // Measurement, then `,key=value` tags up to the first unescaped space.
    let end = scan_until(line, 0, |c| c == b',' || c == b' ');
    let measurement = &line[..end];
    if !input.measurement.contains('\\') {
        assert_eq!(unescape(measurement, b", "), expected(&input.measurement));
    }
    let mut tags: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut i = end;
    while i < line.len() && line[i] == b',' {
        let key_end = scan_until(line, i + 1, |c| c == b'=' || c == b',' || c == b' ');
        assert_eq!(
            line.get(key_end),
            Some(&b'='),
            "tag key without `=`: {line:?}"
        );
        let value_end = scan_until(line, key_end + 1, |c| c == b',' || c == b' ');
        tags.push((
            line[i + 1..key_end].to_vec(),
            unescape(&line[key_end + 1..value_end], b",= "),
        ));
        i = value_end;
    }
    let wanted: Vec<(&str, &str)> = [
        ("device", input.device.as_deref().unwrap_or("")),
        ("site", input.site.as_str()),
        ("station", input.station.as_deref().unwrap_or("")),
        ("stop", input.stop.as_str()),
        ("tag", input.tag.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    assert_eq!(
        tags.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(),
        wanted.iter().map(|(k, _)| k.as_bytes()).collect::<Vec<_>>(),
        "tag keys of {line:?}"
    );
    for ((_, got), (key, want)) in tags.iter().zip(&wanted) {
        if !want.contains('\\') {
            assert_eq!(got, &expected(want), "tag {key} of {line:?}");
        }
    }

    // Fields, then the timestamp.
    assert_eq!(line.get(i), Some(&b' '), "{line:?}");
    i += 1;
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let key_end = scan_until(line, i, |c| c == b'=');
        let key = line[i..key_end].to_vec();
        let value_start = key_end + 1;
        let value_end = if line.get(value_start) == Some(&b'"') {
            let close = scan_until(line, value_start + 1, |c| c == b'"');
            assert_eq!(
                line.get(close),
                Some(&b'"'),
                "unterminated string: {line:?}"
            );
            close + 1
        } else {
            scan_until(line, value_start, |c| c == b',' || c == b' ')
        };
        fields.push((key, line[value_start..value_end].to_vec()));
        i = value_end;
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => break,
            other => panic!("after a field: {other:?} in {line:?}"),
        }
    }
    let timestamp = std::str::from_utf8(&line[i + 1..]).expect("ascii");
    let want_t = if input.timestamp == 0 {
        now.as_nanos()
    } else {
        input.timestamp
    };
    assert_eq!(timestamp, want_t.to_string());
    let (quality_key, quality) = fields.last().expect("quality is always written");
    assert_eq!(quality_key, b"quality");
    assert_eq!(quality, format!("{}i", input.quality).as_bytes());
    match &value {
        Some(Value::Text(s)) => {
            assert_eq!(fields.len(), 2);
            assert_eq!(fields[0].0, b"text");
            let quoted = &fields[0].1;
            let inner = unescape(&quoted[1..quoted.len() - 1], b"\"\\");
            assert_eq!(inner, expected(s), "text field of {line:?}");
        }
        Some(v) => {
            let x = match v {
                Value::Time(t) => t.as_nanos() as f64 / 1e6,
                other => other.as_f64().unwrap_or(f64::NAN),
            };
            if x.is_finite() {
                assert_eq!(fields.len(), 2);
                assert_eq!(fields[0].0, b"value");
                let parsed: f64 = std::str::from_utf8(&fields[0].1).unwrap().parse().unwrap();
                assert_eq!(parsed.to_bits(), x.to_bits(), "value field of {line:?}");
            } else {
                assert_eq!(fields.len(), 1);
            }
        }
        None => assert_eq!(fields.len(), 1),
    }
});
