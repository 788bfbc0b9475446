//! MQTT payload mapping: a message body, a JSON pointer and a tag type give a value or an
//! error; never a panic, and a value is always one the tag's type accepts.
#![no_main]

use arbitrary::Arbitrary;
use fabrique_adapters::mqtt::decode;
use fabrique_adapters::DataType;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    type_index: u8,
    pointer: Option<&'a str>,
    payload: &'a [u8],
}

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

fuzz_target!(|input: Input<'_>| {
    let data_type = TYPES[usize::from(input.type_index) % TYPES.len()];
    if let Ok(value) = decode(input.payload, input.pointer, data_type) {
        assert!(
            data_type.accepts(&value),
            "{data_type:?} tag decoded {value:?} from {:?}",
            String::from_utf8_lossy(input.payload)
        );
    }
});
