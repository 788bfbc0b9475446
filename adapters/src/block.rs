//! One configuration table made of keys every protocol shares and keys of the protocol's own:
//! a `[[devices]]` block is [`crate::device::DeviceCommon`] plus, say, the Modbus keys.
//!
//! `#[serde(flatten)]` would say that in one attribute, but it cannot refuse unknown keys
//! (`deny_unknown_fields` is ignored with it), and a misspelt key must fail with its name. So
//! [`Block`] reads the table, refuses any key that neither part declares, with the same message
//! serde gives for one struct (`unknown field `x`, expected one of ...`, every key of both
//! parts listed), then reads each part from its own keys.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, Visitor};
use serde::ser::{Error as _, Serialize, Serializer};

/// The common keys `C` and the own keys `P` of one table. Reads through to `P`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block<C, P> {
    pub common: C,
    pub own: P,
}

impl<C, P> Deref for Block<C, P> {
    type Target = P;

    fn deref(&self) -> &P {
        &self.own
    }
}

impl<C, P> DerefMut for Block<C, P> {
    fn deref_mut(&mut self) -> &mut P {
        &mut self.own
    }
}

impl<'de, C: DeserializeOwned, P: DeserializeOwned> Deserialize<'de> for Block<C, P> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        let (common_keys, own_keys) = (fields::<C>(), fields::<P>());
        let mut common = toml::Table::new();
        let mut own = toml::Table::new();
        for (key, value) in table {
            if common_keys.contains(&key.as_str()) {
                common.insert(key, value);
            } else if own_keys.contains(&key.as_str()) {
                own.insert(key, value);
            } else {
                let expected: Vec<String> = common_keys
                    .iter()
                    .chain(own_keys)
                    .map(|k| format!("`{k}`"))
                    .collect();
                return Err(de::Error::custom(format_args!(
                    "unknown field `{key}`, expected one of {}",
                    expected.join(", ")
                )));
            }
        }
        Ok(Block {
            common: C::deserialize(toml::Value::Table(common)).map_err(de::Error::custom)?,
            own: P::deserialize(toml::Value::Table(own)).map_err(de::Error::custom)?,
        })
    }
}

impl<C: Serialize, P: Serialize> Serialize for Block<C, P> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let table = |part: toml::Value| match part {
            toml::Value::Table(t) => Ok(t),
            _ => Err(S::Error::custom("a block part is not a table")),
        };
        let mut merged = table(toml::Value::try_from(&self.common).map_err(S::Error::custom)?)?;
        merged.extend(table(
            toml::Value::try_from(&self.own).map_err(S::Error::custom)?,
        )?);
        merged.serialize(serializer)
    }
}

/// The keys a derived `Deserialize` struct accepts: what it hands to `deserialize_struct`.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut probe = Probe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// A deserializer that only records the field names a struct asks for, then stops.
struct Probe(&'static [&'static str]);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut Probe {
    type Error = Stop;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = fields;
        Err(Stop)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Common {
        name: String,
        #[serde(default)]
        steps: Vec<u16>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        address: String,
        #[serde(default = "one")]
        unit: u8,
    }

    fn one() -> u8 {
        1
    }

    type Device = Block<Common, Own>;

    #[test]
    fn each_part_reads_its_own_keys_and_both_write_back_as_one_table() {
        let d: Device = toml::from_str("name = \"plc\"\naddress = \"h:502\"\nsteps = [3]").unwrap();
        assert_eq!(d.common.name, "plc");
        assert_eq!(d.common.steps, [3]);
        assert_eq!(d.address, "h:502");
        assert_eq!(d.unit, 1);
        let text = toml::to_string(&d).unwrap();
        assert_eq!(toml::from_str::<Device>(&text).unwrap(), d);
    }

    #[test]
    fn a_misspelt_key_is_refused_naming_it_and_every_key_of_both_parts() {
        let e = toml::from_str::<Device>("name = \"plc\"\naddress = \"h\"\nsteeps = [3]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "unknown field `steeps`, expected one of `name`, `steps`, `address`, `unit`"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_or_mistyped_key_names_it() {
        let e = toml::from_str::<Device>("name = \"plc\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `address`"), "{e}");
        let e = toml::from_str::<Device>("name = \"plc\"\naddress = \"h\"\nunit = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
    }
}
