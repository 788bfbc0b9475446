//! What the server adds to the shared mapping in `fabrique_adapters::ua`: DataValues with
//! status and timestamps, method outputs, and engineering units.

use fabrique_adapters::ua::{date_time, variant_of};
use fabrique_adapters::{DataType, Point, Quality, Value};
use opcua::types::{
    DataValue, DateTime, EUInformation, LocalizedText, StatusCode, UAString, Variant,
};

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
        Some(v) => match variant_of(data_type, v) {
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
    use fabrique_adapters::Timestamp;

    #[test]
    fn unece_codes_pack_into_unit_ids_as_part_8_says() {
        assert_eq!(engineering_units("°C").unit_id, 4_408_652);
        assert_eq!(engineering_units("%").unit_id, 20_529);
        assert_eq!(engineering_units("furlong").unit_id, -1);
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
