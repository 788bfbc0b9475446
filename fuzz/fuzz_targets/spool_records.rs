//! The spool's record framing: any bytes (a torn or corrupt segment) decode without panicking
//! to a prefix of valid records; records framed by the spool decode back exactly, whatever
//! garbage follows them.
#![no_main]

use arbitrary::Arbitrary;
use fabrique_gateway::streams::spool::{decode_segment, encode_record};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    records: Vec<(u32, &'a [u8])>,
    tail: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let (valid, records) = decode_segment(input.tail);
    assert!(valid <= input.tail.len() as u64);
    let recoded: Vec<u8> = records
        .iter()
        .flat_map(|(w, p)| encode_record(p, *w))
        .collect();
    assert_eq!(&input.tail[..valid as usize], &recoded[..]);

    let mut segment: Vec<u8> = Vec::new();
    for (weight, payload) in &input.records {
        segment.extend(encode_record(payload, *weight));
    }
    let framed = segment.len() as u64;
    segment.extend_from_slice(input.tail);
    let (valid, decoded) = decode_segment(&segment);
    assert!(valid >= framed && valid <= segment.len() as u64);
    assert!(decoded.len() >= input.records.len());
    for ((weight, payload), (w, p)) in input.records.iter().zip(&decoded) {
        assert_eq!((weight, *payload), (w, p.as_slice()));
    }
});
