//! The point model in OPC UA terms: values as variants and timestamps as `DateTime`s, both
//! ways. Shared by the gateway's OPC UA server and the adapter that reads partners' OPC UA
//! servers, so a value crosses the same mapping whichever way it goes.

use opcua::types::{DataTypeId, DateTime, UAString, Variant};

use crate::point::{Timestamp, Value};
use crate::tag::DataType;

/// 100 ns ticks between 1601-01-01 (OPC UA epoch) and 1970-01-01 (Unix epoch).
const TICKS_TO_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

pub fn data_type_id(data_type: DataType) -> DataTypeId {
    match data_type {
        DataType::Bool => DataTypeId::Boolean,
        DataType::Int16 => DataTypeId::Int16,
        DataType::UInt16 => DataTypeId::UInt16,
        DataType::Int32 => DataTypeId::Int32,
        DataType::UInt32 => DataTypeId::UInt32,
        DataType::Int64 => DataTypeId::Int64,
        DataType::UInt64 => DataTypeId::UInt64,
        DataType::Float32 => DataTypeId::Float,
        DataType::Float64 => DataTypeId::Double,
        DataType::String => DataTypeId::String,
        DataType::DateTime => DataTypeId::DateTime,
    }
}

/// `Timestamp::NULL` becomes the null `DateTime`, and back.
pub fn date_time(t: Timestamp) -> DateTime {
    if t.is_null() {
        return DateTime::null();
    }
    DateTime::from(t.as_nanos().div_euclid(100) + TICKS_TO_UNIX_EPOCH)
}

/// `None` for the null `DateTime` and for times a `Timestamp` cannot hold.
pub fn timestamp(t: &DateTime) -> Option<Timestamp> {
    if t.is_null() {
        return None;
    }
    let nanos = (t.ticks() - TICKS_TO_UNIX_EPOCH).checked_mul(100)?;
    Some(Timestamp::from_nanos(nanos))
}

/// The value as the variant of the declared type, or `None` if it does not fit it.
pub fn variant_of(data_type: DataType, value: &Value) -> Option<Variant> {
    Some(match (data_type, value) {
        (DataType::Bool, Value::Bool(b)) => Variant::Boolean(*b),
        (DataType::Int16, Value::Int(i)) => Variant::Int16(i16::try_from(*i).ok()?),
        (DataType::UInt16, Value::UInt(u)) => Variant::UInt16(u16::try_from(*u).ok()?),
        (DataType::Int32, Value::Int(i)) => Variant::Int32(i32::try_from(*i).ok()?),
        (DataType::UInt32, Value::UInt(u)) => Variant::UInt32(u32::try_from(*u).ok()?),
        (DataType::Int64, Value::Int(i)) => Variant::Int64(*i),
        (DataType::UInt64, Value::UInt(u)) => Variant::UInt64(*u),
        (DataType::Float32, Value::Float(f)) => Variant::Float(*f as f32),
        (DataType::Float64, Value::Float(f)) => Variant::Double(*f),
        (DataType::String, Value::Text(s)) => Variant::String(UAString::from(&**s)),
        (DataType::DateTime, Value::Time(t)) => Variant::DateTime(Box::new(date_time(*t))),
        _ => return None,
    })
}

/// The variant as a bus value, if it is exactly of the declared type (no silent widening: a
/// Float written to a Double tag is a type mismatch, as OPC UA servers treat it).
pub fn value_of(data_type: DataType, variant: &Variant) -> Option<Value> {
    Some(match (data_type, variant) {
        (DataType::Bool, Variant::Boolean(b)) => Value::Bool(*b),
        (DataType::Int16, Variant::Int16(i)) => Value::Int((*i).into()),
        (DataType::UInt16, Variant::UInt16(u)) => Value::UInt((*u).into()),
        (DataType::Int32, Variant::Int32(i)) => Value::Int((*i).into()),
        (DataType::UInt32, Variant::UInt32(u)) => Value::UInt((*u).into()),
        (DataType::Int64, Variant::Int64(i)) => Value::Int(*i),
        (DataType::UInt64, Variant::UInt64(u)) => Value::UInt(*u),
        (DataType::Float32, Variant::Float(f)) => Value::Float((*f).into()),
        (DataType::Float64, Variant::Double(f)) => Value::Float(*f),
        (DataType::String, Variant::String(s)) => Value::text(s.as_ref()),
        (DataType::DateTime, Variant::DateTime(t)) => Value::Time(timestamp(t)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_map_to_opc_ua_ticks_and_back() {
        let t = Timestamp::from_nanos(1_700_000_000_123_456_700);
        let dt = date_time(t);
        assert_eq!(
            dt.ticks(),
            1_700_000_000_123_456_700 / 100 + TICKS_TO_UNIX_EPOCH
        );
        assert_eq!(timestamp(&dt), Some(t));
        assert!(date_time(Timestamp::NULL).is_null());
        assert_eq!(timestamp(&DateTime::null()), None);
    }

    #[test]
    fn values_round_trip_through_their_declared_variant() {
        for (data_type, value) in [
            (DataType::Bool, Value::Bool(true)),
            (DataType::Int16, Value::Int(-5)),
            (DataType::UInt32, Value::UInt(70_000)),
            (DataType::Float64, Value::Float(2.5)),
            (DataType::String, Value::text("Léa")),
        ] {
            let variant = variant_of(data_type, &value).unwrap();
            assert_eq!(value_of(data_type, &variant), Some(value));
        }
    }

    #[test]
    fn values_must_match_the_declared_type_exactly() {
        assert_eq!(variant_of(DataType::Int16, &Value::Int(70_000)), None);
        assert_eq!(value_of(DataType::Float64, &Variant::Float(2.5)), None);
        assert_eq!(value_of(DataType::Float64, &Variant::from("2.5")), None);
    }
}
