//! The `[[devices]]` block of a Modbus TCP device, and its check.
//!
//! Register addresses and orders are kept as text in the block and parsed by
//! [`ModbusDevice::compile`], so that a mistake is reported with its key and tag name rather
//! than as a bare serde error.

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::device::{DeviceCommon, TagCommon};

use super::codec::{Layout, Order, Register, Scaling};
use super::plan::Span;
use crate::device::{check_tag_names, ConfigIssue, TagBasics};
use crate::tag::{Access, DataType, EuRange};

/// A `[[devices]]` block with `protocol = "modbus"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusOptions {
    /// `host:port` of the Modbus TCP server.
    pub address: String,
    /// Modbus unit identifier (slave id).
    #[serde(default = "default_unit")]
    pub unit: u8,
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// Connect and per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `big`: the high word comes first (the usual Modbus convention).
    #[serde(default = "big")]
    pub word_order: String,
    /// Byte order inside each 16-bit register; `big` is the Modbus convention.
    #[serde(default = "big")]
    pub byte_order: String,
    /// Unused addresses allowed between two tags read in one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    #[serde(default)]
    pub tags: Vec<ModbusTag>,
}

/// The whole `[[devices]]` block: the keys every protocol shares, then these.
pub type ModbusDevice = Block<DeviceCommon, ModbusOptions>;

/// One `[[devices.tags]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTagOptions {
    /// `holding:10`, `input:0`, `coil:3`, `discrete:7` (0-based addresses).
    pub register: String,
    /// Registers of a `string` tag, 2 characters each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
}

/// The whole `[[devices.tags]]` entry: the keys every protocol's tags share, then these.
pub type ModbusTag = Block<TagCommon, ModbusTagOptions>;

fn default_unit() -> u8 {
    1
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_timeout_ms() -> u64 {
    1000
}
fn big() -> String {
    "big".into()
}
fn default_max_gap() -> u16 {
    8
}

/// A tag ready to poll: where it is, how to decode it, how it is presented.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledTag {
    pub register: Register,
    pub layout: Layout,
    pub scaling: Option<Scaling>,
    /// The type clients see: float64 for a scaled tag, the raw type otherwise.
    pub exposed: DataType,
    pub writable: bool,
    pub range: Option<EuRange>,
}

impl CompiledTag {
    pub fn span(&self) -> Span {
        Span {
            table: self.register.table,
            start: self.register.address,
            count: self.layout.registers(),
        }
    }
}

impl Block<TagCommon, ModbusTagOptions> {
    pub fn basics(&self, exposed: DataType) -> TagBasics<'_> {
        self.common.basics(exposed)
    }

    fn compile(&self, word_order: Order, byte_order: Order) -> Result<CompiledTag, ConfigIssue> {
        let register =
            Register::parse(&self.register).map_err(|r| ConfigIssue::new("register", r))?;
        let table = register.table;
        let raw = self.common.data_type;
        if raw == DataType::DateTime {
            return Err(ConfigIssue::new(
                "type",
                "`datetime` has no Modbus encoding; use bool, int16, uint16, int32, uint32, \
                 int64, uint64, float32, float64 or string",
            ));
        }
        if table.is_bits() && raw != DataType::Bool {
            return Err(ConfigIssue::new(
                "type",
                format!("a {table} holds one bit: the type must be `bool`, not `{raw}`"),
            ));
        }
        let length = match (raw, self.length) {
            (DataType::String, None) => {
                return Err(ConfigIssue::new(
                    "length",
                    "a string tag needs `length`, its number of registers (2 characters each)",
                ))
            }
            (DataType::String, Some(n)) if n == 0 || n > table.max_read() => {
                return Err(ConfigIssue::new(
                    "length",
                    format!("must be between 1 and {}, got {n}", table.max_read()),
                ))
            }
            (DataType::String, Some(n)) => n,
            (_, Some(_)) => {
                return Err(ConfigIssue::new(
                    "length",
                    "only applies to `type = \"string\"`",
                ))
            }
            (_, None) => 0,
        };
        let layout = Layout {
            raw,
            length,
            word_order,
            byte_order,
        };
        let end = u32::from(register.address) + u32::from(layout.registers());
        if end > 65536 {
            return Err(ConfigIssue::new(
                "register",
                format!(
                    "`{}` spans {} registers and runs past the last address 65535",
                    self.register,
                    layout.registers()
                ),
            ));
        }
        if self.common.access == Access::ReadWrite && !table.is_writable() {
            return Err(ConfigIssue::new(
                "access",
                format!(
                    "a {table} is read-only in Modbus; `readwrite` needs a holding register or a coil"
                ),
            ));
        }
        let scaling = match (self.scale, self.offset) {
            (None, None) => None,
            (scale, offset) => {
                if !raw.is_numeric() {
                    let key = if scale.is_some() { "scale" } else { "offset" };
                    return Err(ConfigIssue::new(
                        key,
                        format!("only numeric tags can be scaled, not `{raw}`"),
                    ));
                }
                let scale = scale.unwrap_or(1.0);
                let offset = offset.unwrap_or(0.0);
                if !(scale.is_finite() && scale != 0.0) {
                    return Err(ConfigIssue::new(
                        "scale",
                        format!("must be a finite, non-zero number, got {scale}"),
                    ));
                }
                if !offset.is_finite() {
                    return Err(ConfigIssue::new("offset", "must be a finite number"));
                }
                Some(Scaling { scale, offset })
            }
        };
        if let Some(alarm) = &self.common.alarm {
            alarm.check("alarm")?;
        }
        if let Some(range) = self.common.range {
            if !(range.low.is_finite() && range.high.is_finite() && range.low < range.high) {
                return Err(ConfigIssue::new(
                    "range",
                    format!("needs finite low < high, got {}..{}", range.low, range.high),
                ));
            }
        }
        Ok(CompiledTag {
            register,
            layout,
            scaling,
            exposed: if scaling.is_some() {
                DataType::Float64
            } else {
                raw
            },
            writable: self.common.access == Access::ReadWrite,
            range: self.common.range,
        })
    }
}

impl Block<DeviceCommon, ModbusOptions> {
    /// Check the block and prepare its tags; the issue's key is relative to the block.
    pub fn compile(&self) -> Result<Vec<CompiledTag>, ConfigIssue> {
        check_address(&self.address).map_err(|r| ConfigIssue::new("address", r))?;
        if !(10..=3_600_000).contains(&self.poll_ms) {
            return Err(ConfigIssue::new(
                "poll_ms",
                format!("must be between 10 and 3600000, got {}", self.poll_ms),
            ));
        }
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err(ConfigIssue::new(
                "timeout_ms",
                format!("must be between 10 and 60000, got {}", self.timeout_ms),
            ));
        }
        let word_order =
            Order::parse(&self.word_order).map_err(|r| ConfigIssue::new("word_order", r))?;
        let byte_order =
            Order::parse(&self.byte_order).map_err(|r| ConfigIssue::new("byte_order", r))?;
        if self.max_gap > 124 {
            return Err(ConfigIssue::new(
                "max_gap",
                format!("must be between 0 and 124, got {}", self.max_gap),
            ));
        }
        if self.tags.is_empty() {
            return Err(ConfigIssue::new(
                "tags",
                "a Modbus device needs at least one `[[devices.tags]]`",
            ));
        }
        check_tag_names(self.tags.iter().map(|t| t.common.name.as_str()))?;
        self.tags
            .iter()
            .enumerate()
            .map(|(i, tag)| {
                tag.compile(word_order, byte_order)
                    .map_err(|issue| issue.in_tag(i, &tag.common.name))
            })
            .collect()
    }
}

/// `host:port`; the host is resolved when connecting.
fn check_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "`{address}` is not `host:port`, e.g. `127.0.0.1:502`"
        ));
    };
    if host.is_empty() {
        return Err(format!("`{address}` has no host"));
    }
    crate::net::check_host(host)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{port}` is not a port number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(tags: &str) -> ModbusDevice {
        let text = format!(
            "name = \"press\"\nstation = \"Partners\"\naddress = \"127.0.0.1:5020\"\n{tags}"
        );
        toml::from_str(&text).unwrap()
    }

    fn issue(tags: &str) -> ConfigIssue {
        device(tags).compile().unwrap_err()
    }

    #[test]
    fn out_of_service_reaches_the_standard_shape() {
        let shape = |extra: &str| {
            crate::registry::DeviceConfig::Modbus(device(&format!("kind = \"machine\"\n{extra}")))
                .standard()
        };
        assert!(!shape("").out_of_service, "in service unless configured");
        assert!(shape("out_of_service = true").out_of_service);
    }

    #[test]
    fn the_documented_block_compiles_with_defaults() {
        let d = device(
            "unit = 3\npoll_ms = 200\n\
             [[tags]]\nname = \"Pressure\"\nregister = \"holding:10\"\ntype = \"float32\"\naccess = \"readwrite\"\nunit = \"bar\"\nrange = { low = 0.0, high = 250.0 }\n\
             [[tags]]\nname = \"Temp\"\nregister = \"input:3\"\ntype = \"int16\"\nscale = 0.1\n\
             [[tags]]\nname = \"Label\"\nregister = \"holding:20\"\ntype = \"string\"\nlength = 4\n\
             [[tags]]\nname = \"Run\"\nregister = \"coil:0\"\ntype = \"bool\"\n",
        );
        assert_eq!((d.unit, d.timeout_ms, d.max_gap), (3, 1000, 8));
        let tags = d.compile().unwrap();
        assert_eq!(tags[0].exposed, DataType::Float32);
        assert!(tags[0].writable);
        assert_eq!(tags[1].exposed, DataType::Float64);
        assert_eq!(tags[2].span().count, 4);
        assert_eq!(tags[3].span().count, 1);
    }

    #[test]
    fn mistakes_name_their_key_and_tag() {
        let one = |body: &str| issue(&format!("[[tags]]\nname = \"P\"\n{body}"));
        let i = one("register = \"holding10\"\ntype = \"int16\"");
        assert_eq!(i.key, "tags[0].register");
        assert!(i.reason.starts_with("tag `P`:"), "{}", i.reason);

        let i = one("register = \"holding:65534\"\ntype = \"float64\"");
        assert_eq!(i.key, "tags[0].register");
        assert!(i.reason.contains("65535"), "{}", i.reason);

        assert_eq!(
            one("register = \"holding:0\"\ntype = \"string\"").key,
            "tags[0].length"
        );
        assert_eq!(
            one("register = \"holding:0\"\ntype = \"int16\"\nlength = 2").key,
            "tags[0].length"
        );
        assert_eq!(
            one("register = \"input:0\"\ntype = \"int16\"\naccess = \"readwrite\"").key,
            "tags[0].access"
        );
        assert_eq!(
            one("register = \"discrete:0\"\ntype = \"bool\"\naccess = \"readwrite\"").key,
            "tags[0].access"
        );
        assert_eq!(
            one("register = \"coil:0\"\ntype = \"int16\"").key,
            "tags[0].type"
        );
        assert_eq!(
            one("register = \"holding:0\"\ntype = \"bool\"\nscale = 2.0").key,
            "tags[0].scale"
        );
        assert_eq!(
            one("register = \"holding:0\"\ntype = \"int16\"\nscale = 0.0").key,
            "tags[0].scale"
        );
        assert_eq!(
            one("register = \"holding:0\"\ntype = \"datetime\"").key,
            "tags[0].type"
        );
        assert_eq!(
            one("register = \"holding:0\"\ntype = \"int16\"\nrange = { low = 5.0, high = 1.0 }")
                .key,
            "tags[0].range"
        );
    }

    #[test]
    fn device_options_are_checked() {
        let tag = "[[tags]]\nname = \"P\"\nregister = \"holding:0\"\ntype = \"int16\"\n";
        assert_eq!(
            issue(&format!("word_order = \"middle\"\n{tag}")).key,
            "word_order"
        );
        assert_eq!(
            issue(&format!("byte_order = \"BIG\"\n{tag}")).key,
            "byte_order"
        );
        assert_eq!(issue(&format!("poll_ms = 0\n{tag}")).key, "poll_ms");
        assert_eq!(issue(&format!("max_gap = 500\n{tag}")).key, "max_gap");
        assert_eq!(issue("").key, "tags");
        let mut d = device(tag);
        d.address = "localhost".into();
        assert_eq!(d.compile().unwrap_err().key, "address");
        d.address = "localhost:0".into();
        assert_eq!(d.compile().unwrap_err().key, "address");
        let dup = format!("{tag}{tag}");
        assert_eq!(issue(&dup).key, "tags[1].name");
    }
}
