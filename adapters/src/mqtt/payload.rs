//! From MQTT payloads to tag values and back: pure functions, no I/O.
//!
//! Telemetry is either a JSON document (a tag picks its field with an RFC 6901 pointer) or a
//! bare value (the whole payload: `21.5`, `true`, `"text"`, or plain text for string tags).
//! Conversions are strict: a value that does not fit the tag's type is refused rather than
//! rounded, clamped or guessed.

use serde_json::{Number, Value as Json};

use crate::point::Value;
use crate::tag::DataType;

use super::config::CommandFormat;

/// Why a payload gave no value for a tag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("no field at JSON pointer `{0}`")]
    MissingField(String),
    #[error("expected {expected}, got {found}")]
    WrongType {
        expected: DataType,
        found: &'static str,
    },
    #[error("{value} is out of range for {data_type}")]
    OutOfRange { value: String, data_type: DataType },
}

impl PayloadError {
    /// A short name for the kind of error: bad messages are logged once per tag and kind.
    pub fn kind(&self) -> &'static str {
        match self {
            PayloadError::NotUtf8 => "not-utf8",
            PayloadError::NotJson(_) => "not-json",
            PayloadError::MissingField(_) => "missing-field",
            PayloadError::WrongType { .. } => "wrong-type",
            PayloadError::OutOfRange { .. } => "out-of-range",
        }
    }
}

/// The value of a tag of type `data_type` in `payload`, at `pointer` if given.
pub fn decode(
    payload: &[u8],
    pointer: Option<&str>,
    data_type: DataType,
) -> Result<Value, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    match pointer {
        Some(pointer) => {
            let document: Json =
                serde_json::from_str(text).map_err(|e| PayloadError::NotJson(e.to_string()))?;
            let field = document
                .pointer(pointer)
                .ok_or_else(|| PayloadError::MissingField(pointer.to_owned()))?;
            from_json(field, data_type)
        }
        None => decode_bare(text, data_type),
    }
}

/// A whole payload as one value.
fn decode_bare(text: &str, data_type: DataType) -> Result<Value, PayloadError> {
    let trimmed = text.trim();
    match data_type {
        // Plain text is the value as it is; a JSON string literal is unquoted.
        DataType::String => match serde_json::from_str::<Json>(trimmed) {
            Ok(Json::String(s)) => Ok(Value::text(s)),
            _ => Ok(Value::text(text)),
        },
        DataType::Bool => match trimmed {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => match serde_json::from_str::<Json>(trimmed) {
                Ok(json) => from_json(&json, data_type),
                Err(e) => Err(PayloadError::NotJson(e.to_string())),
            },
        },
        _ => {
            let json: Json =
                serde_json::from_str(trimmed).map_err(|e| PayloadError::NotJson(e.to_string()))?;
            from_json(&json, data_type)
        }
    }
}

fn json_kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a non-integer number",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A JSON scalar as a value of `data_type`.
pub fn from_json(json: &Json, data_type: DataType) -> Result<Value, PayloadError> {
    let wrong = || PayloadError::WrongType {
        expected: data_type,
        found: json_kind(json),
    };
    match data_type {
        DataType::Bool => json.as_bool().map(Value::Bool).ok_or_else(wrong),
        DataType::String => json.as_str().map(Value::text).ok_or_else(wrong),
        DataType::Float32 | DataType::Float64 => {
            let x = json.as_f64().ok_or_else(wrong)?;
            if data_type == DataType::Float32 && x.abs() > f64::from(f32::MAX) {
                return Err(PayloadError::OutOfRange {
                    value: x.to_string(),
                    data_type,
                });
            }
            Ok(Value::Float(x))
        }
        DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => {
            let Json::Number(n) = json else {
                return Err(wrong());
            };
            integer(n, data_type).ok_or_else(wrong)?
        }
        DataType::DateTime => Err(wrong()),
    }
}

/// `None` when `n` is not a whole number; out of range of the type is an error of its own.
fn integer(n: &Number, data_type: DataType) -> Option<Result<Value, PayloadError>> {
    // Whole numbers written with a fraction or an exponent (`3.0`, `1e3`) are accepted;
    // `3.7` is not.
    let whole: i128 = if let Some(i) = n.as_i64() {
        i128::from(i)
    } else if let Some(u) = n.as_u64() {
        i128::from(u)
    } else {
        let x = n.as_f64()?;
        if !x.is_finite() || x.fract() != 0.0 {
            return None;
        }
        if x.abs() >= 1.9e19 {
            return Some(Err(PayloadError::OutOfRange {
                value: n.to_string(),
                data_type,
            }));
        }
        x as i128
    };
    let (low, high): (i128, i128) = match data_type {
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::UInt16 => (0, u16::MAX.into()),
        DataType::UInt32 => (0, u32::MAX.into()),
        _ => (0, u64::MAX.into()),
    };
    if !(low..=high).contains(&whole) {
        return Some(Err(PayloadError::OutOfRange {
            value: n.to_string(),
            data_type,
        }));
    }
    let value = match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => Value::Int(whole as i64),
        _ => Value::UInt(whole as u64),
    };
    Some(Ok(value))
}

/// The payload published on a command topic for `value`; `None` for a value JSON cannot
/// carry (a non-finite float).
pub fn encode_command(value: &Value, format: CommandFormat) -> Option<Vec<u8>> {
    let json = match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(x) => Json::Number(Number::from_f64(*x)?),
        Value::Text(s) => Json::String(s.to_string()),
        Value::Time(_) => return None,
    };
    let bytes = match format {
        CommandFormat::Json => serde_json::json!({ "value": json }).to_string(),
        CommandFormat::Plain => match json {
            Json::String(s) => s,
            other => other.to_string(),
        },
    };
    Some(bytes.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(payload: &str, pointer: &str, data_type: DataType) -> Result<Value, PayloadError> {
        decode(payload.as_bytes(), Some(pointer), data_type)
    }

    fn bare(payload: &str, data_type: DataType) -> Result<Value, PayloadError> {
        decode(payload.as_bytes(), None, data_type)
    }

    const DOC: &str = r#"{"temp": 21.5, "count": 42, "on": true, "mode": "bake",
        "neg": -3, "whole": 3.0, "big": 70000, "axes": [{"pos": 1.25}], "a/b": 7}"#;

    #[test]
    fn json_fields_of_every_type() {
        assert_eq!(at(DOC, "/temp", DataType::Float64), Ok(Value::Float(21.5)));
        assert_eq!(at(DOC, "/count", DataType::Float32), Ok(Value::Float(42.0)));
        assert_eq!(at(DOC, "/count", DataType::Int16), Ok(Value::Int(42)));
        assert_eq!(at(DOC, "/count", DataType::UInt64), Ok(Value::UInt(42)));
        assert_eq!(at(DOC, "/neg", DataType::Int32), Ok(Value::Int(-3)));
        assert_eq!(at(DOC, "/whole", DataType::Int16), Ok(Value::Int(3)));
        assert_eq!(at(DOC, "/on", DataType::Bool), Ok(Value::Bool(true)));
        assert_eq!(at(DOC, "/mode", DataType::String), Ok(Value::text("bake")));
        assert_eq!(
            at(DOC, "/axes/0/pos", DataType::Float64),
            Ok(Value::Float(1.25))
        );
        assert_eq!(at(DOC, "/a~1b", DataType::UInt16), Ok(Value::UInt(7)));
    }

    #[test]
    fn integers_must_be_whole_and_fit_the_width() {
        let e = at(DOC, "/temp", DataType::Int16).unwrap_err();
        assert_eq!(e.kind(), "wrong-type");
        assert!(e.to_string().contains("int16"), "{e}");
        let e = at(DOC, "/big", DataType::Int16).unwrap_err();
        assert_eq!(e.kind(), "out-of-range");
        assert!(e.to_string().contains("70000"), "{e}");
        assert_eq!(at(DOC, "/big", DataType::Int32), Ok(Value::Int(70000)));
        assert_eq!(
            at(DOC, "/neg", DataType::UInt32).unwrap_err().kind(),
            "out-of-range"
        );
        assert_eq!(bare("65535", DataType::UInt16), Ok(Value::UInt(65535)));
        assert_eq!(
            bare("65536", DataType::UInt16).unwrap_err().kind(),
            "out-of-range"
        );
        assert_eq!(bare("-32768", DataType::Int16), Ok(Value::Int(-32768)));
        assert_eq!(
            bare("18446744073709551615", DataType::UInt64),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            bare("18446744073709551616", DataType::UInt64)
                .unwrap_err()
                .kind(),
            "out-of-range"
        );
        assert_eq!(
            bare("1e40", DataType::Float32).unwrap_err().kind(),
            "out-of-range"
        );
        assert_eq!(
            bare("1e40", DataType::Int64).unwrap_err().kind(),
            "out-of-range"
        );
    }

    #[test]
    fn types_are_not_guessed() {
        assert_eq!(
            at(DOC, "/mode", DataType::Float64).unwrap_err().kind(),
            "wrong-type"
        );
        assert_eq!(
            at(DOC, "/count", DataType::String).unwrap_err().kind(),
            "wrong-type"
        );
        assert_eq!(
            at(DOC, "/count", DataType::Bool).unwrap_err().kind(),
            "wrong-type"
        );
        assert_eq!(
            at(DOC, "/axes", DataType::Float64).unwrap_err().kind(),
            "wrong-type"
        );
        assert_eq!(
            at(r#"{"t": null}"#, "/t", DataType::Int64)
                .unwrap_err()
                .kind(),
            "wrong-type"
        );
    }

    #[test]
    fn bad_documents_and_missing_fields() {
        assert_eq!(
            at("{not json", "/temp", DataType::Float64)
                .unwrap_err()
                .kind(),
            "not-json"
        );
        assert_eq!(
            at(DOC, "/nope", DataType::Float64).unwrap_err().kind(),
            "missing-field"
        );
        let e = decode(&[0xff, 0xfe], Some("/temp"), DataType::Float64).unwrap_err();
        assert_eq!(e, PayloadError::NotUtf8);
        assert_eq!(
            decode(&[0xff], None, DataType::String),
            Err(PayloadError::NotUtf8)
        );
    }

    #[test]
    fn bare_payloads() {
        assert_eq!(bare("21.5", DataType::Float64), Ok(Value::Float(21.5)));
        assert_eq!(bare(" 21.5\n", DataType::Float64), Ok(Value::Float(21.5)));
        assert_eq!(
            bare("hot", DataType::Float64).unwrap_err().kind(),
            "not-json"
        );
        assert_eq!(bare("-7", DataType::Int64), Ok(Value::Int(-7)));
        for (text, b) in [("true", true), ("false", false), ("1", true), ("0", false)] {
            assert_eq!(bare(text, DataType::Bool), Ok(Value::Bool(b)), "{text}");
        }
        assert_eq!(bare("2", DataType::Bool).unwrap_err().kind(), "wrong-type");
        assert_eq!(bare("yes", DataType::Bool).unwrap_err().kind(), "not-json");
        assert_eq!(bare("baking", DataType::String), Ok(Value::text("baking")));
        assert_eq!(
            bare("\"baking\"", DataType::String),
            Ok(Value::text("baking"))
        );
        assert_eq!(bare("42", DataType::String), Ok(Value::text("42")));
        assert_eq!(bare("", DataType::String), Ok(Value::text("")));
    }

    #[test]
    fn commands_in_json_and_plain() {
        let json = |v: Value| String::from_utf8(encode_command(&v, CommandFormat::Json).unwrap());
        let plain = |v: Value| String::from_utf8(encode_command(&v, CommandFormat::Plain).unwrap());
        assert_eq!(json(Value::Float(21.5)).unwrap(), r#"{"value":21.5}"#);
        assert_eq!(json(Value::Int(-3)).unwrap(), r#"{"value":-3}"#);
        assert_eq!(json(Value::Bool(true)).unwrap(), r#"{"value":true}"#);
        assert_eq!(json(Value::text("a\"b")).unwrap(), r#"{"value":"a\"b"}"#);
        assert_eq!(plain(Value::Float(21.5)).unwrap(), "21.5");
        assert_eq!(plain(Value::UInt(7)).unwrap(), "7");
        assert_eq!(plain(Value::Bool(false)).unwrap(), "false");
        assert_eq!(plain(Value::text("bake")).unwrap(), "bake");
        assert_eq!(
            encode_command(&Value::Float(f64::NAN), CommandFormat::Json),
            None
        );
    }

    #[test]
    fn commands_decode_back_to_the_same_value() {
        for (value, dt) in [
            (Value::Float(21.5), DataType::Float64),
            (Value::Int(-300), DataType::Int16),
            (Value::UInt(9), DataType::UInt32),
            (Value::Bool(true), DataType::Bool),
            (Value::text("bake"), DataType::String),
        ] {
            let json = encode_command(&value, CommandFormat::Json).unwrap();
            assert_eq!(decode(&json, Some("/value"), dt), Ok(value.clone()));
            let plain = encode_command(&value, CommandFormat::Plain).unwrap();
            assert_eq!(decode(&plain, None, dt), Ok(value));
        }
    }
}
