//! Where a tag lives on a Modbus device and how its registers turn into a value and back.
//!
//! Pure functions only: no I/O, so every rule (word order, byte order, scaling, what fits a raw
//! type) is unit-tested here.

use std::fmt;

use crate::adapter::WriteError;
use crate::point::Value;
use crate::tag::DataType;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Coil,
    Discrete,
    Input,
    Holding,
}

impl Table {
    /// One bit per address (coils, discrete inputs) rather than one 16-bit register.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The most addresses one read request may cover (Modbus application protocol 1.1b3,
    /// functions 01/02: 2000 bits, 03/04: 125 registers).
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }

    /// Clients may write coils and holding registers; discrete and input are read-only.
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::Holding)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        })
    }
}

/// A tag's first address: `holding:10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register {
    pub table: Table,
    pub address: u16,
}

impl Register {
    pub fn parse(text: &str) -> Result<Register, String> {
        let usage = "write `<table>:<address>` with table holding, input, coil or discrete \
                     and a 0-based address, e.g. `holding:10`";
        let Some((table, address)) = text.split_once(':') else {
            return Err(format!("`{text}`: {usage}"));
        };
        let table = match table.trim() {
            "holding" => Table::Holding,
            "input" => Table::Input,
            "coil" => Table::Coil,
            "discrete" => Table::Discrete,
            other => return Err(format!("unknown table `{other}`: {usage}")),
        };
        let address = address
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("address `{address}` is not a number from 0 to 65535: {usage}"))?;
        Ok(Register { table, address })
    }
}

/// Which half comes first: the high one (`big`, the Modbus convention) or the low one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Big,
    Little,
}

impl Order {
    pub fn parse(text: &str) -> Result<Order, String> {
        match text {
            "big" => Ok(Order::Big),
            "little" => Ok(Order::Little),
            other => Err(format!("`{other}` is not `big` or `little`")),
        }
    }
}

/// Raw value layout of one tag: its type on the device and how its registers are ordered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// The type stored on the device (`type` in the configuration).
    pub raw: DataType,
    /// Registers of a string tag (2 characters each); ignored for other types.
    pub length: u16,
    pub word_order: Order,
    pub byte_order: Order,
}

/// Engineering value = raw × scale + offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    pub scale: f64,
    pub offset: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the device sent {got} registers where {expected} were expected")]
    Short { expected: usize, got: usize },
    #[error("the string registers are not valid UTF-8")]
    NotUtf8,
    #[error("type {0} has no Modbus encoding")]
    Unsupported(DataType),
}

impl Layout {
    /// How many addresses the tag spans: registers for register tables, one bit for a bool
    /// on a coil or discrete input.
    pub fn registers(&self) -> u16 {
        match self.raw {
            DataType::Bool | DataType::Int16 | DataType::UInt16 => 1,
            DataType::Int32 | DataType::UInt32 | DataType::Float32 => 2,
            DataType::Int64 | DataType::UInt64 | DataType::Float64 => 4,
            DataType::String => self.length,
            // Refused by the configuration check.
            DataType::DateTime => 1,
        }
    }

    /// The tag's bytes, most significant first (strings: first character first).
    fn bytes(&self, words: &[u16]) -> Vec<u8> {
        let mut ordered: Vec<u16> = words.to_vec();
        // Strings are read in address order; word order only applies to numbers.
        if self.word_order == Order::Little && self.raw != DataType::String {
            ordered.reverse();
        }
        ordered
            .iter()
            .flat_map(|w| match self.byte_order {
                Order::Big => w.to_be_bytes(),
                Order::Little => w.to_le_bytes(),
            })
            .collect()
    }

    /// The inverse of [`Self::bytes`].
    fn words(&self, bytes: &[u8]) -> Vec<u16> {
        let mut words: Vec<u16> = bytes
            .chunks(2)
            .map(|pair| {
                let pair = [pair[0], pair.get(1).copied().unwrap_or(0)];
                match self.byte_order {
                    Order::Big => u16::from_be_bytes(pair),
                    Order::Little => u16::from_le_bytes(pair),
                }
            })
            .collect();
        if self.word_order == Order::Little && self.raw != DataType::String {
            words.reverse();
        }
        words
    }

    /// The raw value of a register tag from its registers.
    pub fn decode(&self, words: &[u16]) -> Result<Value, DecodeError> {
        let expected = usize::from(self.registers());
        if words.len() < expected {
            return Err(DecodeError::Short {
                expected,
                got: words.len(),
            });
        }
        let b = self.bytes(&words[..expected]);
        let fixed = |n: usize| -> [u8; 8] {
            let mut out = [0u8; 8];
            out[..n].copy_from_slice(&b[..n]);
            out
        };
        Ok(match self.raw {
            DataType::Bool => Value::Bool(words[0] != 0),
            DataType::Int16 => Value::Int(i16::from_be_bytes([b[0], b[1]]).into()),
            DataType::UInt16 => Value::UInt(u16::from_be_bytes([b[0], b[1]]).into()),
            DataType::Int32 => Value::Int(i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
            DataType::UInt32 => Value::UInt(u32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
            DataType::Float32 => Value::Float(f32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
            DataType::Int64 => Value::Int(i64::from_be_bytes(fixed(8))),
            DataType::UInt64 => Value::UInt(u64::from_be_bytes(fixed(8))),
            DataType::Float64 => Value::Float(f64::from_be_bytes(fixed(8))),
            DataType::String => {
                let end = b
                    .iter()
                    .rposition(|&c| c != 0 && c != b' ')
                    .map_or(0, |i| i + 1);
                let text = std::str::from_utf8(&b[..end]).map_err(|_| DecodeError::NotUtf8)?;
                Value::text(text)
            }
            DataType::DateTime => return Err(DecodeError::Unsupported(self.raw)),
        })
    }

    /// The registers holding `raw`, which must already be of the layout's raw type; a string
    /// is padded with NULs. `Err` if it does not fit.
    pub fn encode(&self, raw: &Value) -> Result<Vec<u16>, WriteError> {
        let mismatch = || WriteError::TypeMismatch(self.raw);
        let bytes: Vec<u8> = match (self.raw, raw) {
            (DataType::Bool, Value::Bool(b)) => return Ok(vec![u16::from(*b)]),
            (DataType::Int16, Value::Int(i)) => i16::try_from(*i)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .into(),
            (DataType::UInt16, Value::UInt(u)) => u16::try_from(*u)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .into(),
            (DataType::Int32, Value::Int(i)) => i32::try_from(*i)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .into(),
            (DataType::UInt32, Value::UInt(u)) => u32::try_from(*u)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .into(),
            (DataType::Int64, Value::Int(i)) => i.to_be_bytes().into(),
            (DataType::UInt64, Value::UInt(u)) => u.to_be_bytes().into(),
            (DataType::Float32, Value::Float(f)) => (*f as f32).to_be_bytes().into(),
            (DataType::Float64, Value::Float(f)) => f.to_be_bytes().into(),
            (DataType::String, Value::Text(s)) => {
                let capacity = usize::from(self.length) * 2;
                if s.len() > capacity {
                    return Err(mismatch());
                }
                let mut b = s.as_bytes().to_vec();
                b.resize(capacity, 0);
                b
            }
            _ => return Err(mismatch()),
        };
        Ok(self.words(&bytes))
    }
}

/// Lowest and highest raw value of an integer or float type, as f64.
fn raw_limits(raw: DataType) -> (f64, f64) {
    match raw {
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::UInt16 => (0.0, u16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::UInt32 => (0.0, u32::MAX.into()),
        DataType::Int64 => (i64::MIN as f64, i64::MAX as f64),
        DataType::UInt64 => (0.0, u64::MAX as f64),
        DataType::Float32 => (f32::MIN.into(), f32::MAX.into()),
        _ => (f64::MIN, f64::MAX),
    }
}

impl Scaling {
    pub fn apply(&self, raw: &Value) -> Option<f64> {
        raw.as_f64().map(|x| x * self.scale + self.offset)
    }

    /// The raw value (of type `raw`) to write for the engineering value `value`: integers are
    /// rounded to the nearest step. `OutOfRange` gives the engineering limits of the raw type.
    pub fn invert(&self, value: f64, raw: DataType) -> Result<Value, WriteError> {
        let (lo, hi) = raw_limits(raw);
        let (a, b) = (lo * self.scale + self.offset, hi * self.scale + self.offset);
        let out_of_range = || WriteError::OutOfRange {
            value,
            low: a.min(b),
            high: a.max(b),
        };
        let x = (value - self.offset) / self.scale;
        if !x.is_finite() {
            return Err(out_of_range());
        }
        let int = x.round();
        // `as` saturates at the 64-bit edges, where f64 cannot tell the limit from one past it.
        let result = match raw {
            DataType::Float32 | DataType::Float64 => {
                return if x >= lo && x <= hi {
                    Ok(Value::Float(x))
                } else {
                    Err(out_of_range())
                };
            }
            _ if int < lo || int > hi => return Err(out_of_range()),
            DataType::Int16 | DataType::Int32 | DataType::Int64 => Value::Int(int as i64),
            DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Value::UInt(int as u64),
            _ => return Err(WriteError::TypeMismatch(raw)),
        };
        Ok(result)
    }
}

/// Check an unscaled integer write against the raw type, reporting the type's own limits.
pub fn check_raw_fits(value: &Value, raw: DataType) -> Result<(), WriteError> {
    let fits = match (raw, value) {
        (DataType::Int16, Value::Int(i)) => i16::try_from(*i).is_ok(),
        (DataType::UInt16, Value::UInt(u)) => u16::try_from(*u).is_ok(),
        (DataType::Int32, Value::Int(i)) => i32::try_from(*i).is_ok(),
        (DataType::UInt32, Value::UInt(u)) => u32::try_from(*u).is_ok(),
        (DataType::Float32, Value::Float(f)) => !f.is_finite() || f.abs() <= f64::from(f32::MAX),
        _ => true,
    };
    if fits {
        Ok(())
    } else {
        let (low, high) = raw_limits(raw);
        Err(WriteError::OutOfRange {
            value: value.as_f64().unwrap_or(f64::NAN),
            low,
            high,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(raw: DataType, word: Order, byte: Order) -> Layout {
        Layout {
            raw,
            length: 0,
            word_order: word,
            byte_order: byte,
        }
    }

    #[test]
    fn registers_parse_with_table_and_zero_based_address() {
        assert_eq!(
            Register::parse("holding:10"),
            Ok(Register {
                table: Table::Holding,
                address: 10
            })
        );
        assert_eq!(Register::parse("coil:0").unwrap().table, Table::Coil);
        assert!(Register::parse("holding")
            .unwrap_err()
            .contains("holding:10"));
        assert!(Register::parse("memory:1")
            .unwrap_err()
            .contains("unknown table `memory`"));
        assert!(Register::parse("input:65536").is_err());
        assert!(Register::parse("input:-1").is_err());
    }

    #[test]
    fn float32_in_every_word_and_byte_order() {
        // 1.5f32 = 0x3FC0_0000
        let cases = [
            (Order::Big, Order::Big, [0x3FC0, 0x0000]),
            (Order::Little, Order::Big, [0x0000, 0x3FC0]),
            (Order::Big, Order::Little, [0xC03F, 0x0000]),
            (Order::Little, Order::Little, [0x0000, 0xC03F]),
        ];
        for (word, byte, words) in cases {
            let l = layout(DataType::Float32, word, byte);
            assert_eq!(l.decode(&words), Ok(Value::Float(1.5)), "{word:?} {byte:?}");
            assert_eq!(l.encode(&Value::Float(1.5)).unwrap(), words);
        }
    }

    #[test]
    fn integers_of_every_width() {
        let big = |raw| layout(raw, Order::Big, Order::Big);
        assert_eq!(big(DataType::Int16).decode(&[0xFFFE]), Ok(Value::Int(-2)));
        assert_eq!(
            big(DataType::UInt16).decode(&[0xFFFE]),
            Ok(Value::UInt(65534))
        );
        assert_eq!(
            big(DataType::Int32).decode(&[0xFFFF, 0xFFFD]),
            Ok(Value::Int(-3))
        );
        assert_eq!(
            big(DataType::UInt32).decode(&[0x0001, 0x0002]),
            Ok(Value::UInt(0x0001_0002))
        );
        let words = [0x0102, 0x0304, 0x0506, 0x0708];
        assert_eq!(
            big(DataType::UInt64).decode(&words),
            Ok(Value::UInt(0x0102_0304_0506_0708))
        );
        let little = layout(DataType::Int64, Order::Little, Order::Big);
        assert_eq!(
            little.decode(&[0x0708, 0x0506, 0x0304, 0x0102]),
            Ok(Value::Int(0x0102_0304_0506_0708))
        );
        assert_eq!(little.encode(&Value::Int(-1)).unwrap(), vec![0xFFFF; 4]);
        let f64_words = big(DataType::Float64).encode(&Value::Float(-2.25)).unwrap();
        assert_eq!(
            big(DataType::Float64).decode(&f64_words),
            Ok(Value::Float(-2.25))
        );
    }

    #[test]
    fn bool_on_a_register_is_non_zero() {
        let l = layout(DataType::Bool, Order::Big, Order::Big);
        assert_eq!(l.decode(&[0]), Ok(Value::Bool(false)));
        assert_eq!(l.decode(&[7]), Ok(Value::Bool(true)));
        assert_eq!(l.encode(&Value::Bool(true)).unwrap(), vec![1]);
    }

    #[test]
    fn strings_trim_padding_and_follow_byte_order() {
        let mut l = layout(DataType::String, Order::Little, Order::Big);
        l.length = 3;
        // "AB", "C\0", "  ": word order does not apply to strings.
        assert_eq!(l.decode(&[0x4142, 0x4300, 0x2020]), Ok(Value::text("ABC")));
        assert_eq!(
            l.encode(&Value::text("ABC")).unwrap(),
            vec![0x4142, 0x4300, 0]
        );
        assert!(l.encode(&Value::text("ABCDEFG")).is_err());
        l.byte_order = Order::Little;
        assert_eq!(l.decode(&[0x4241, 0x0043, 0]), Ok(Value::text("ABC")));
        assert_eq!(l.decode(&[0xFFFE, 0, 0]), Err(DecodeError::NotUtf8));
    }

    #[test]
    fn short_replies_are_rejected() {
        let l = layout(DataType::Float64, Order::Big, Order::Big);
        assert_eq!(
            l.decode(&[1, 2]),
            Err(DecodeError::Short {
                expected: 4,
                got: 2
            })
        );
    }

    #[test]
    fn scaling_inverts_with_rounding_and_refuses_what_does_not_fit() {
        let s = Scaling {
            scale: 0.1,
            offset: 0.0,
        };
        assert_eq!(s.invert(12.34, DataType::Int16), Ok(Value::Int(123)));
        assert_eq!(s.invert(-5.0, DataType::Int16), Ok(Value::Int(-50)));
        match s.invert(4000.0, DataType::Int16) {
            Err(WriteError::OutOfRange { low, high, .. }) => {
                assert!((low + 3276.8).abs() < 1e-9 && (high - 3276.7).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        assert!(s.invert(-0.1, DataType::UInt16).is_err());
        let shifted = Scaling {
            scale: 2.0,
            offset: 10.0,
        };
        assert_eq!(shifted.apply(&Value::UInt(5)), Some(20.0));
        assert_eq!(shifted.invert(20.0, DataType::UInt32), Ok(Value::UInt(5)));
        assert_eq!(
            shifted.invert(20.0, DataType::Float32),
            Ok(Value::Float(5.0))
        );
        assert!(shifted.invert(f64::NAN, DataType::Int32).is_err());
    }

    #[test]
    fn unscaled_values_must_fit_the_raw_type() {
        assert!(check_raw_fits(&Value::Int(40000), DataType::Int16).is_err());
        assert!(check_raw_fits(&Value::Int(-4), DataType::Int16).is_ok());
        assert!(check_raw_fits(&Value::Float(1e39), DataType::Float32).is_err());
        assert!(check_raw_fits(&Value::Float(1e30), DataType::Float32).is_ok());
    }
}
