//! The Modbus register codec: any layout decodes any registers without panicking, and a value
//! that encodes decodes back to itself (register → value → register for every raw type).
#![no_main]

use arbitrary::Arbitrary;
use fabrique_adapters::modbus::codec::{Layout, Order, Register, Scaling};
use fabrique_adapters::{DataType, Value};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    type_index: u8,
    length: u8,
    word_little: bool,
    byte_little: bool,
    words: Vec<u16>,
    scale: f64,
    offset: f64,
    register: &'a str,
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

fn order(little: bool) -> Order {
    if little {
        Order::Little
    } else {
        Order::Big
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

fuzz_target!(|input: Input<'_>| {
    let _ = Register::parse(input.register);
    let layout = Layout {
        raw: TYPES[usize::from(input.type_index) % TYPES.len()],
        length: u16::from(input.length),
        word_order: order(input.word_little),
        byte_order: order(input.byte_little),
    };
    let Ok(value) = layout.decode(&input.words) else {
        return;
    };
    assert!(layout.raw.accepts(&value), "{layout:?} decoded {value:?}");
    let scaling = Scaling {
        scale: input.scale,
        offset: input.offset,
    };
    if let Some(engineering) = scaling.apply(&value) {
        let _ = scaling.invert(engineering, layout.raw);
    }
    // Strings drop trailing padding, bools read any non-zero word: the others are exact,
    // except a NaN's payload, which the f32 → f64 → f32 round trip may quiet.
    if matches!(layout.raw, DataType::String | DataType::Bool)
        || matches!(value, Value::Float(x) if x.is_nan())
    {
        return;
    }
    let words = layout
        .encode(&value)
        .unwrap_or_else(|e| panic!("{layout:?}: decoded {value:?} does not encode: {e}"));
    let n = usize::from(layout.registers());
    assert_eq!(words, input.words[..n], "{layout:?} {value:?}");
    let again = layout.decode(&words).expect("decoded once");
    assert!(
        same(&again, &value),
        "{layout:?}: {value:?} became {again:?}"
    );
});
