//! The partner's OPC UA values as bus points, and written values as the partner's variants.

use opcua::types::{DataValue, StatusCode, Variant};

use crate::adapter::WriteError;
use crate::point::{Point, Quality, Timestamp, Value};
use crate::tag::{DataType, EuRange};
pub use crate::ua::variant_of;
use crate::ua::{timestamp, value_of};

/// What a data value from the partner means for its tag.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A value of the declared type, with the partner's status as its quality.
    Point(Point),
    /// No value, only a status (typically Bad): the tag keeps its last value with that quality.
    Status(Quality, Timestamp),
    /// A value of another type than the declared one.
    WrongType { found: String },
}

/// Interpret a data value for a tag of `data_type`; `now` stamps values the partner did not.
pub fn sample(data_type: DataType, dv: &DataValue, now: Timestamp) -> Sample {
    let status = dv.status.unwrap_or(StatusCode::Good);
    let quality = Quality(status.bits());
    let at = dv
        .source_timestamp
        .as_ref()
        .and_then(timestamp)
        .or_else(|| dv.server_timestamp.as_ref().and_then(timestamp))
        .unwrap_or(now);
    match dv.value.as_ref() {
        None | Some(Variant::Empty) if status.is_bad() => Sample::Status(quality, at),
        None | Some(Variant::Empty) => Sample::WrongType {
            found: "no value".into(),
        },
        Some(variant) => match value_of(data_type, variant) {
            Some(value) => Sample::Point(Point {
                value: Some(value),
                quality,
                timestamp: at,
            }),
            // A Bad status explains the odd value; it is not the partner's type that is wrong.
            None if status.is_bad() => Sample::Status(quality, at),
            None => Sample::WrongType {
                found: match variant.scalar_type_id() {
                    Some(scalar) => format!("a {scalar:?}"),
                    None => "an array".into(),
                },
            },
        },
    }
}

/// The partner's refusal of a write, as the gateway's write error.
pub fn write_refusal(
    status: StatusCode,
    data_type: DataType,
    value: &Value,
    range: Option<EuRange>,
) -> WriteError {
    match status.sub_code() {
        s if s == StatusCode::BadOutOfRange.sub_code() => {
            // The partner's own limits are not known here; the configured range, if any, is the
            // best description of them.
            let (low, high) = range.map_or((f64::NEG_INFINITY, f64::INFINITY), |r| (r.low, r.high));
            WriteError::OutOfRange {
                value: value.as_f64().unwrap_or(f64::NAN),
                low,
                high,
            }
        }
        s if s == StatusCode::BadTypeMismatch.sub_code() => WriteError::TypeMismatch(data_type),
        s if s == StatusCode::BadNotWritable.sub_code()
            || s == StatusCode::BadUserAccessDenied.sub_code() =>
        {
            WriteError::NotWritable
        }
        s if s == StatusCode::BadTimeout.sub_code()
            || s == StatusCode::BadRequestTimeout.sub_code() =>
        {
            WriteError::Timeout
        }
        _ if lost_connection(status) => WriteError::NotConnected,
        _ => WriteError::Refused(status_name(status)),
    }
}

/// Status codes that mean the session or its connection is gone, not that a request failed.
pub fn lost_connection(status: StatusCode) -> bool {
    [
        StatusCode::BadNotConnected,
        StatusCode::BadConnectionClosed,
        StatusCode::BadSecureChannelClosed,
        StatusCode::BadSecureChannelIdInvalid,
        StatusCode::BadSessionClosed,
        StatusCode::BadSessionIdInvalid,
        StatusCode::BadSessionNotActivated,
        StatusCode::BadCommunicationError,
        StatusCode::BadServerHalted,
        StatusCode::BadShutdown,
    ]
    .iter()
    .any(|s| s.sub_code() == status.sub_code())
}

/// `BadOutOfRange` rather than a number, for logs and the device's LastError.
pub fn status_name(status: StatusCode) -> String {
    status.sub_code().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dv(value: Variant, status: StatusCode) -> DataValue {
        DataValue {
            value: Some(value),
            status: Some(status),
            source_timestamp: Some(crate::ua::date_time(Timestamp::from_nanos(
                1_700_000_000_000_000_000,
            ))),
            source_picoseconds: None,
            server_timestamp: None,
            server_picoseconds: None,
        }
    }

    #[test]
    fn good_values_keep_the_source_timestamp() {
        let now = Timestamp::now();
        let s = sample(
            DataType::Float64,
            &dv(Variant::Double(21.5), StatusCode::Good),
            now,
        );
        assert_eq!(
            s,
            Sample::Point(Point {
                value: Some(Value::Float(21.5)),
                quality: Quality::GOOD,
                timestamp: Timestamp::from_nanos(1_700_000_000_000_000_000),
            })
        );
    }

    #[test]
    fn the_partner_status_is_the_quality() {
        let now = Timestamp::now();
        match sample(
            DataType::Float64,
            &dv(Variant::Empty, StatusCode::BadSensorFailure),
            now,
        ) {
            Sample::Status(q, _) => assert_eq!(q, Quality(StatusCode::BadSensorFailure.bits())),
            other => panic!("{other:?}"),
        }
        match sample(
            DataType::Int32,
            &dv(Variant::Int32(3), StatusCode::UncertainLastUsableValue),
            now,
        ) {
            Sample::Point(p) => assert_eq!(p.quality, Quality::UNCERTAIN_LAST_USABLE_VALUE),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_value_of_another_type_is_a_type_error() {
        let now = Timestamp::now();
        assert!(matches!(
            sample(
                DataType::Int32,
                &dv(Variant::Double(1.0), StatusCode::Good),
                now
            ),
            Sample::WrongType { .. }
        ));
        assert!(matches!(
            sample(DataType::Int32, &dv(Variant::Empty, StatusCode::Good), now),
            Sample::WrongType { .. }
        ));
    }

    #[test]
    fn written_values_take_the_declared_variant() {
        assert_eq!(
            variant_of(DataType::Float32, &Value::Float(1.5)),
            Some(Variant::Float(1.5))
        );
        assert_eq!(
            variant_of(DataType::Int16, &Value::Int(70_000)),
            None,
            "does not fit"
        );
        let t = Timestamp::from_nanos(1_700_000_000_123_456_700);
        let Some(Variant::DateTime(dt)) = variant_of(DataType::DateTime, &Value::Time(t)) else {
            panic!("datetime")
        };
        assert_eq!(timestamp(&dt), Some(t));
    }

    #[test]
    fn partner_refusals_map_to_write_errors() {
        let v = Value::Float(500.0);
        let range = Some(EuRange {
            low: 0.0,
            high: 100.0,
        });
        assert_eq!(
            write_refusal(StatusCode::BadOutOfRange, DataType::Float64, &v, range),
            WriteError::OutOfRange {
                value: 500.0,
                low: 0.0,
                high: 100.0
            }
        );
        assert_eq!(
            write_refusal(StatusCode::BadUserAccessDenied, DataType::Float64, &v, None),
            WriteError::NotWritable
        );
        assert_eq!(
            write_refusal(StatusCode::BadTypeMismatch, DataType::Float64, &v, None),
            WriteError::TypeMismatch(DataType::Float64)
        );
        assert_eq!(
            write_refusal(StatusCode::BadConnectionClosed, DataType::Float64, &v, None),
            WriteError::NotConnected
        );
        assert_eq!(
            write_refusal(StatusCode::BadDeviceFailure, DataType::Float64, &v, None),
            WriteError::Refused("BadDeviceFailure".into())
        );
    }
}
