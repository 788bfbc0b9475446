//! Conversions between the bus's point model and OPC UA types, done once at the edge.

use fabrique_adapters::{DataType, Point, Quality, Timestamp, Value};
use opcua::types::{
    DataTypeId, DataValue, DateTime, EUInformation, LocalizedText, StatusCode, UAString, Variant,
};

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

pub fn date_time(t: Timestamp) -> DateTime {
    if t.is_null() {
        return DateTime::null();
    }
    DateTime::from(t.as_nanos().div_euclid(100) + TICKS_TO_UNIX_EPOCH)
}

/// The value as the variant of the tag's declared type, or `None` if it does not fit (an
/// adapter bug, shown to clients as BadTypeMismatch rather than as a wrong number).
pub fn to_variant(data_type: DataType, value: &Value) -> Option<Variant> {
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

/// A value in the variant that fits it best, for method outputs that have no declared tag.
pub fn natural_variant(value: &Value) -> Variant {
    match value {
        Value::Bool(b) => Variant::Boolean(*b),
        Value::Int(i) => Variant::Int64(*i),
        Value::UInt(u) => Variant::UInt64(*u),
        Value::Float(f) => Variant::Double(*f),
        Value::Text(s) => Variant::String(UAString::from(&**s)),
        Value::Time(t) => Variant::DateTime(Box::new(date_time(*t))),
    }
}

/// A client's written variant as a bus value, if it has exactly the tag's type.
pub fn from_variant(data_type: DataType, variant: &Variant) -> Option<Value> {
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
        _ => return None,
    })
}

/// A bus point as the DataValue clients read, with the device's source timestamp.
pub fn data_value(data_type: DataType, point: &Point, server_time: DateTime) -> DataValue {
    let source_timestamp = (!point.timestamp.is_null()).then(|| date_time(point.timestamp));
    data_value_at(data_type, point, source_timestamp, server_time)
}

/// As [`data_value`], with the source timestamp already converted.
pub fn data_value_at(
    data_type: DataType,
    point: &Point,
    source_timestamp: Option<DateTime>,
    server_time: DateTime,
) -> DataValue {
    let (value, status) = match &point.value {
        None => (Variant::Empty, status_code(point.quality)),
        Some(v) => match to_variant(data_type, v) {
            Some(variant) => (variant, status_code(point.quality)),
            None => (Variant::Empty, StatusCode::BadTypeMismatch),
        },
    };
    DataValue {
        value: Some(value),
        status: Some(status),
        source_timestamp,
        source_picoseconds: None,
        server_timestamp: Some(server_time),
        server_picoseconds: None,
    }
}

pub fn status_code(quality: Quality) -> StatusCode {
    StatusCode::from(quality.0)
}

/// Unit symbols as people write them, with their UNECE Recommendation 20 common codes, which
/// OPC UA encodes into `EUInformation.UnitId` (Part 8, 5.6.3).
const UNITS: &[(&str, &str, &str)] = &[
    ("°C", "CEL", "degree Celsius"),
    ("%", "P1", "percent"),
    ("mm", "MMT", "millimetre"),
    ("m", "MTR", "metre"),
    ("s", "SEC", "second"),
    ("min", "MIN", "minute"),
    ("h", "HUR", "hour"),
    ("rpm", "RPM", "revolutions per minute"),
    ("mm/min", "H81", "millimetre per minute"),
    ("mm/s", "C16", "millimetre per second"),
    ("m/min", "2X", "metre per minute"),
    ("°", "DD", "degree (angle)"),
    ("A", "AMP", "ampere"),
    ("V", "VLT", "volt"),
    ("W", "WTT", "watt"),
    ("kW", "KWT", "kilowatt"),
    ("Hz", "HTZ", "hertz"),
    ("bar", "BAR", "bar"),
    ("kg", "KGM", "kilogram"),
    ("g", "GRM", "gram"),
    ("l/min", "L2", "litre per minute"),
];

const UNECE_NAMESPACE: &str = "http://www.opcfoundation.org/UA/units/un/cefact";

/// `EngineeringUnits` for a unit symbol; unknown symbols keep their text with UnitId -1.
pub fn engineering_units(symbol: &str) -> EUInformation {
    let (unit_id, description) = UNITS
        .iter()
        .find(|(s, _, _)| *s == symbol)
        .map_or((-1, symbol), |(_, code, name)| (unece_unit_id(code), *name));
    EUInformation {
        namespace_uri: UAString::from(UNECE_NAMESPACE),
        unit_id,
        display_name: LocalizedText::new("", symbol),
        description: LocalizedText::new("en", description),
    }
}

fn unece_unit_id(code: &str) -> i32 {
    code.bytes().fold(0i32, |id, b| (id << 8) | i32::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unece_codes_pack_into_unit_ids_as_part_8_says() {
        assert_eq!(engineering_units("°C").unit_id, 4_408_652);
        assert_eq!(engineering_units("%").unit_id, 20_529);
        assert_eq!(engineering_units("furlong").unit_id, -1);
    }

    #[test]
    fn timestamps_map_to_opc_ua_ticks() {
        let t = Timestamp::from_nanos(1_700_000_000_123_456_700);
        let dt = date_time(t);
        assert_eq!(
            dt.ticks(),
            1_700_000_000_123_456_700 / 100 + TICKS_TO_UNIX_EPOCH
        );
        assert!(date_time(Timestamp::NULL).is_null());
    }

    #[test]
    fn writes_must_match_the_declared_type_exactly() {
        assert_eq!(
            from_variant(DataType::Float64, &Variant::Double(2.5)),
            Some(Value::Float(2.5))
        );
        assert_eq!(from_variant(DataType::Float64, &Variant::Float(2.5)), None);
        assert_eq!(from_variant(DataType::Float64, &Variant::from("2.5")), None);
    }

    #[test]
    fn values_that_do_not_fit_their_type_become_bad_type_mismatch() {
        let point = Point {
            value: Some(Value::Int(70_000)),
            quality: Quality::GOOD,
            timestamp: Timestamp::now(),
        };
        let dv = data_value(DataType::Int16, &point, DateTime::now());
        assert_eq!(dv.status, Some(StatusCode::BadTypeMismatch));
    }
}
