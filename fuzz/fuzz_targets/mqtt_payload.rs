//! MQTT payload mapping: a message body, a JSON pointer and a tag type give a value or an
//! error; never a panic, and a value is always one the tag's type accepts.
#![no_main]

use fabrique_adapters::mqtt::decode;
use fabrique_adapters::DataType;
use libfuzzer_sys::fuzz_target;

const TYPES: [DataType; 11] = [
    DataType::Bool,
    DataType::Int16,
    DataType::UInt16,
    DataType::Int32,
    DataType::UInt32,
    DataType::Int64,
    DataType::UInt64,
    DataType::Float32,
    DataType::Float64,
    DataType::String,
    DataType::DateTime,
];

// Input layout, so that seeds are readable: one byte for the tag's type, then either
// `pointer\n` and the payload (a JSON pointer, `/a/0/b`), or `\n` and the bare payload.
fuzz_target!(|data: &[u8]| {
    let Some((&type_byte, rest)) = data.split_first() else {
        return;
    };
    let data_type = TYPES[usize::from(type_byte) % TYPES.len()];
    let Some(split) = rest.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(pointer) = std::str::from_utf8(&rest[..split]) else {
        return;
    };
    let pointer = (!pointer.is_empty()).then_some(pointer);
    let payload = &rest[split + 1..];
    if let Ok(value) = decode(payload, pointer, data_type) {
        assert!(
            data_type.accepts(&value),
            "{data_type:?} tag decoded {value:?} from {:?}",
            String::from_utf8_lossy(payload)
        );
    }
});
