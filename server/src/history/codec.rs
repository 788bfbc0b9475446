//! The historian's sample encoding: one chunk of bytes per tag, appended sample by sample.
//!
//! Byte-aligned (not a bit stream) so a chunk can be cut anywhere between samples, written
//! to the write-ahead log as it grows, and continued after a restart by decoding it once.
//!
//! A chunk starts with one byte, the value kind. Each sample is then:
//! `head: u8 | dod: zigzag varint | [quality: varint] | [value bytes]`
//! - `dod`: delta of delta of the timestamp in 100 ns ticks (OPC UA's resolution), so a
//!   regular 10 Hz tag costs one byte per timestamp.
//! - head bit 7: the quality differs from the previous sample's (the first is compared with
//!   Good), and follows.
//! - head bit 6: the sample has no value (a Bad quality without a last value).
//! - head bits 0..5, per kind:
//!   - float: XOR of the f64 bits with the previous value's; bits 5..3 count its leading zero
//!     bytes, bits 2..0 its trailing zero bytes, and only the bytes between are stored
//!     (`7, 7`: the same value, nothing stored). A slowly moving or rounded value keeps few.
//!   - integers, booleans, times: bit 0 set when unchanged, else a zigzag varint of the
//!     wrapping difference.
//!   - text: bit 0 set when unchanged, else a varint length and the UTF-8 bytes.

use std::sync::Arc;

use fabrique_adapters::{DataType, Quality, Timestamp, Value};

/// What the values of a chunk are; from the tag's declared data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Float = 0,
    Int = 1,
    UInt = 2,
    Bool = 3,
    Time = 4,
    Text = 5,
}

impl Kind {
    pub fn of(data_type: DataType) -> Kind {
        match data_type {
            DataType::Bool => Kind::Bool,
            DataType::Int16 | DataType::Int32 | DataType::Int64 => Kind::Int,
            DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => Kind::UInt,
            DataType::Float32 | DataType::Float64 => Kind::Float,
            DataType::String => Kind::Text,
            DataType::DateTime => Kind::Time,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Float,
            1 => Kind::Int,
            2 => Kind::UInt,
            3 => Kind::Bool,
            4 => Kind::Time,
            5 => Kind::Text,
            _ => return None,
        })
    }

    /// The value as the 64 bits this kind stores, `None` when it is of another kind.
    fn bits(self, value: &Value) -> Option<u64> {
        Some(match (self, value) {
            (Kind::Float, Value::Float(f)) => f.to_bits(),
            (Kind::Int, Value::Int(i)) => *i as u64,
            (Kind::UInt, Value::UInt(u)) => *u,
            (Kind::Bool, Value::Bool(b)) => u64::from(*b),
            (Kind::Time, Value::Time(t)) => t.as_nanos() as u64,
            _ => return None,
        })
    }

    /// The stored bits as a number, as `Value::as_f64` gives it; `None` for times and texts.
    fn number(self, bits: u64) -> Option<f64> {
        match self {
            Kind::Float => Some(f64::from_bits(bits)),
            Kind::Int => Some(bits as i64 as f64),
            Kind::UInt => Some(bits as f64),
            Kind::Bool => Some(if bits != 0 { 1.0 } else { 0.0 }),
            Kind::Time | Kind::Text => None,
        }
    }

    fn value(self, bits: u64) -> Value {
        match self {
            Kind::Float => Value::Float(f64::from_bits(bits)),
            Kind::Int => Value::Int(bits as i64),
            Kind::UInt => Value::UInt(bits),
            Kind::Bool => Value::Bool(bits != 0),
            Kind::Time => Value::Time(Timestamp::from_nanos(bits as i64)),
            Kind::Text => Value::text(""),
        }
    }
}

/// One stored sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// 100 ns ticks since the Unix epoch.
    pub ticks: i64,
    pub value: Option<Value>,
    pub quality: Quality,
}

pub fn ticks_of(t: Timestamp) -> i64 {
    t.as_nanos().div_euclid(100)
}

const QUALITY_FOLLOWS: u8 = 0x80;
const NO_VALUE: u8 = 0x40;
const SAME_FLOAT: u8 = 0x3F;
const SAME: u8 = 0x01;

/// Where decoding or encoding stands after the last sample: what the next one is compared to.
#[derive(Debug, Clone, Default)]
struct State {
    prev_ticks: i64,
    prev_delta: i64,
    prev_quality: u32,
    prev_bits: u64,
    prev_text: Option<Arc<str>>,
}

/// A chunk being written: its bytes and what the next sample is encoded against.
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    kind: Kind,
    bytes: Vec<u8>,
    state: State,
    pub count: u32,
    pub min_ticks: i64,
    pub max_ticks: i64,
}

impl ChunkEncoder {
    pub fn new(kind: Kind) -> Self {
        ChunkEncoder {
            kind,
            bytes: vec![kind as u8],
            state: State::default(),
            count: 0,
            min_ticks: i64::MAX,
            max_ticks: i64::MIN,
        }
    }

    /// Continue a chunk read back from the write-ahead log. `None` if it does not decode.
    pub fn resume(bytes: Vec<u8>) -> Option<Self> {
        let mut decoder = Decoder::new(&bytes)?;
        let kind = decoder.kind;
        let (mut count, mut min_ticks, mut max_ticks) = (0u32, i64::MAX, i64::MIN);
        while let Some(sample) = decoder.next_sample() {
            count += 1;
            min_ticks = min_ticks.min(sample.ticks);
            max_ticks = max_ticks.max(sample.ticks);
        }
        if decoder.failed {
            return None;
        }
        let state = decoder.state;
        Some(ChunkEncoder {
            kind,
            bytes,
            state,
            count,
            min_ticks,
            max_ticks,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The chunk's bytes since the last `forget_bytes` (all of them if it never spilled).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Forget the bytes held so far (the caller has stored them elsewhere); the encoder keeps
    /// its state, so the next samples continue the same chunk: the chunk is then the bytes
    /// stored elsewhere, in order, followed by `bytes()`. Keeps a small buffer for the next.
    pub fn forget_bytes(&mut self, keep_capacity: usize) {
        self.bytes.clear();
        self.bytes.shrink_to(keep_capacity);
    }

    #[cfg(test)]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The last sample's timestamp, if any.
    pub fn last_ticks(&self) -> Option<i64> {
        (self.count > 0).then_some(self.state.prev_ticks)
    }

    /// Append one sample. A value of another kind than the chunk's is stored as "no value".
    pub fn push(&mut self, ticks: i64, value: Option<&Value>, quality: Quality) {
        let s = &mut self.state;
        let delta = ticks.wrapping_sub(s.prev_ticks);
        let dod = delta.wrapping_sub(s.prev_delta);
        let mut head = 0u8;
        if quality.0 != s.prev_quality {
            head |= QUALITY_FOLLOWS;
        }
        let head_at = self.bytes.len();
        self.bytes.push(0);
        put_varint(&mut self.bytes, zigzag(dod));
        if head & QUALITY_FOLLOWS != 0 {
            put_varint(&mut self.bytes, u64::from(quality.0));
        }
        match (self.kind, value) {
            (Kind::Text, Some(Value::Text(text))) => {
                if s.prev_text.as_deref() == Some(&**text) {
                    head |= SAME;
                } else {
                    put_varint(&mut self.bytes, text.len() as u64);
                    self.bytes.extend_from_slice(text.as_bytes());
                    s.prev_text = Some(text.clone());
                }
            }
            (kind, Some(value)) => match kind.bits(value) {
                Some(bits) if kind == Kind::Float => {
                    let xor = bits ^ s.prev_bits;
                    if xor == 0 {
                        head |= SAME_FLOAT;
                    } else {
                        let lz = (xor.leading_zeros() / 8).min(7);
                        let tz = (xor.trailing_zeros() / 8).min(7 - lz);
                        head |= ((lz as u8) << 3) | tz as u8;
                        let be = xor.to_be_bytes();
                        self.bytes
                            .extend_from_slice(&be[lz as usize..(8 - tz) as usize]);
                    }
                    s.prev_bits = bits;
                }
                Some(bits) => {
                    let diff = bits.wrapping_sub(s.prev_bits) as i64;
                    if diff == 0 {
                        head |= SAME;
                    } else {
                        put_varint(&mut self.bytes, zigzag(diff));
                    }
                    s.prev_bits = bits;
                }
                None => head |= NO_VALUE,
            },
            (_, None) => head |= NO_VALUE,
        }
        self.bytes[head_at] = head;
        s.prev_ticks = ticks;
        s.prev_delta = delta;
        s.prev_quality = quality.0;
        self.count += 1;
        self.min_ticks = self.min_ticks.min(ticks);
        self.max_ticks = self.max_ticks.max(ticks);
    }
}

/// Reads the samples of one chunk in order.
pub struct Decoder<'a> {
    kind: Kind,
    bytes: &'a [u8],
    at: usize,
    state: State,
    /// Set when the bytes end in the middle of a sample or hold an impossible one.
    pub failed: bool,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let kind = Kind::from_byte(*bytes.first()?)?;
        Some(Decoder {
            kind,
            bytes,
            at: 1,
            state: State::default(),
            failed: false,
        })
    }

    pub fn next_sample(&mut self) -> Option<Sample> {
        if self.at >= self.bytes.len() || self.failed {
            return None;
        }
        let sample = self.decode();
        if sample.is_none() {
            self.failed = true;
        }
        sample
    }

    fn varint(&mut self) -> Option<u64> {
        let (v, used) = get_varint(&self.bytes[self.at..])?;
        self.at += used;
        Some(v)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn decode(&mut self) -> Option<Sample> {
        let (ticks, value, quality) = self.decode_raw()?;
        let value = match value {
            Raw::None => None,
            Raw::Text => Some(Value::Text(self.state.prev_text.clone()?)),
            Raw::Bits(bits) => Some(self.kind.value(bits)),
        };
        Some(Sample {
            ticks,
            value,
            quality: Quality(quality),
        })
    }

    /// The next sample as a number, without building its `Value`: `(ticks, value)`, the value
    /// `None` when the sample is not Good or not a number (a text, a time, no value).
    /// Outer `None`: the end of the chunk (or an undecodable byte, `failed`).
    pub fn next_number(&mut self) -> Option<(i64, Option<f64>)> {
        if self.at >= self.bytes.len() || self.failed {
            return None;
        }
        let Some((ticks, value, quality)) = self.decode_raw() else {
            self.failed = true;
            return None;
        };
        let number = match value {
            Raw::Bits(bits) if Quality(quality).is_good() => self.kind.number(bits),
            _ => None,
        };
        Some((ticks, number))
    }

    /// One sample: its ticks, its value as stored, its quality; updates the state.
    fn decode_raw(&mut self) -> Option<(i64, Raw, u32)> {
        let head = *self.bytes.get(self.at)?;
        self.at += 1;
        let dod = unzigzag(self.varint()?);
        let delta = self.state.prev_delta.wrapping_add(dod);
        let ticks = self.state.prev_ticks.wrapping_add(delta);
        if head & QUALITY_FOLLOWS != 0 {
            self.state.prev_quality = u32::try_from(self.varint()?).ok()?;
        }
        let value = if head & NO_VALUE != 0 {
            Raw::None
        } else {
            match self.kind {
                Kind::Text => {
                    if head & SAME == 0 {
                        let len = usize::try_from(self.varint()?).ok()?;
                        let text = std::str::from_utf8(self.take(len)?).ok()?;
                        self.state.prev_text = Some(Arc::from(text));
                    } else if self.state.prev_text.is_none() {
                        return None;
                    }
                    Raw::Text
                }
                Kind::Float => {
                    let bits = head & SAME_FLOAT;
                    if bits != SAME_FLOAT {
                        let lz = usize::from(bits >> 3);
                        let tz = usize::from(bits & 7);
                        if lz + tz > 7 {
                            return None;
                        }
                        let mut be = [0u8; 8];
                        be[lz..8 - tz].copy_from_slice(self.take(8 - lz - tz)?);
                        self.state.prev_bits ^= u64::from_be_bytes(be);
                    }
                    Raw::Bits(self.state.prev_bits)
                }
                _ => {
                    if head & SAME == 0 {
                        let diff = unzigzag(self.varint()?);
                        self.state.prev_bits = self.state.prev_bits.wrapping_add(diff as u64);
                    }
                    Raw::Bits(self.state.prev_bits)
                }
            }
        };
        self.state.prev_ticks = ticks;
        self.state.prev_delta = delta;
        Some((ticks, value, self.state.prev_quality))
    }
}

/// A sample's value as the decoder holds it.
enum Raw {
    None,
    /// The previous text (`State::prev_text`).
    Text,
    Bits(u64),
}

/// Every sample of a chunk (stops at the first undecodable byte).
pub fn decode_all(bytes: &[u8]) -> Vec<Sample> {
    let mut out = Vec::new();
    if let Some(mut decoder) = Decoder::new(bytes) {
        while let Some(sample) = decoder.next_sample() {
            out.push(sample);
        }
    }
    out
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The value and how many bytes it took; `None` if cut short or longer than 10 bytes.
pub fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: Kind, samples: &[Sample]) -> Vec<u8> {
        let mut enc = ChunkEncoder::new(kind);
        for s in samples {
            enc.push(s.ticks, s.value.as_ref(), s.quality);
        }
        assert_eq!(decode_all(enc.bytes()), samples);
        enc.into_bytes()
    }

    #[test]
    fn floats_roundtrip_and_a_regular_counter_is_small() {
        let samples: Vec<Sample> = (0..1000)
            .map(|i| Sample {
                ticks: 17_000_000_000_000_000 + i * 1_000_000,
                value: Some(Value::Float(i as f64)),
                quality: Quality::GOOD,
            })
            .collect();
        let bytes = roundtrip(Kind::Float, &samples);
        assert!(bytes.len() < 5 * samples.len(), "{} bytes", bytes.len());
    }

    #[test]
    fn every_kind_roundtrips_with_qualities_gaps_and_missing_values() {
        let q = [Quality::GOOD, Quality::BAD_NO_COMMUNICATION, Quality::GOOD];
        let values = [
            (
                Kind::Float,
                vec![
                    Value::Float(1.5),
                    Value::Float(-3.25e9),
                    Value::Float(f64::NAN),
                ],
            ),
            (
                Kind::Int,
                vec![Value::Int(i64::MIN), Value::Int(5), Value::Int(5)],
            ),
            (
                Kind::UInt,
                vec![Value::UInt(u64::MAX), Value::UInt(0), Value::UInt(7)],
            ),
            (
                Kind::Bool,
                vec![Value::Bool(true), Value::Bool(true), Value::Bool(false)],
            ),
            (
                Kind::Time,
                vec![
                    Value::Time(Timestamp::from_nanos(-5)),
                    Value::Time(Timestamp::from_nanos(9)),
                ],
            ),
            (
                Kind::Text,
                vec![
                    Value::text("Idle"),
                    Value::text("Idle"),
                    Value::text("Running é"),
                ],
            ),
        ];
        for (kind, vals) in values {
            let mut samples = Vec::new();
            for (i, v) in vals.iter().enumerate() {
                samples.push(Sample {
                    ticks: 1000 + (i as i64) * 37 - if i == 2 { 500 } else { 0 },
                    value: if i == 1 && kind == Kind::Int {
                        None
                    } else {
                        Some(v.clone())
                    },
                    quality: q[i % 3],
                });
            }
            let mut enc = ChunkEncoder::new(kind);
            for s in &samples {
                enc.push(s.ticks, s.value.as_ref(), s.quality);
            }
            let decoded = decode_all(enc.bytes());
            assert_eq!(decoded.len(), samples.len());
            for (d, s) in decoded.iter().zip(&samples) {
                assert_eq!(d.ticks, s.ticks);
                assert_eq!(d.quality, s.quality);
                match (&d.value, &s.value) {
                    (Some(Value::Float(a)), Some(Value::Float(b))) => {
                        assert_eq!(a.to_bits(), b.to_bits())
                    }
                    (a, b) => assert_eq!(a, b),
                }
            }
        }
    }

    #[test]
    fn a_chunk_cut_anywhere_resumes_and_continues() {
        let mut enc = ChunkEncoder::new(Kind::Float);
        for i in 0..50 {
            enc.push(i * 10, Some(&Value::Float(i as f64 * 0.1)), Quality::GOOD);
        }
        let mut resumed = ChunkEncoder::resume(enc.bytes().to_vec()).unwrap();
        assert_eq!(resumed.count, 50);
        for i in 50..60 {
            enc.push(i * 10, Some(&Value::Float(i as f64 * 0.1)), Quality::GOOD);
            resumed.push(i * 10, Some(&Value::Float(i as f64 * 0.1)), Quality::GOOD);
        }
        assert_eq!(enc.bytes(), resumed.bytes());
        // A torn tail decodes up to the last whole sample.
        let bytes = enc.bytes();
        let cut = &bytes[..bytes.len() - 1];
        assert_eq!(decode_all(cut).len(), 59);
    }
}
