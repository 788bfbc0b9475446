//! The historian's benchmark (figures in BENCHMARKS.md). Not run by `cargo test`:
//! `cargo test --release -p fabrique-gateway history::bench -- --ignored --nocapture`

use std::time::Instant;

use fabrique_adapters::{DataType, Quality, TagId, Value};

use super::aggregate::{self, Aggregate};
use super::codec::Kind;
use super::store::{Limits, Store};
use super::ua::sample_value_for_bench;

fn limits() -> Limits {
    Limits {
        max_age_ticks: 0,
        max_bytes: 0,
        seal_bytes: 32 << 20,
        fsync: true,
    }
}

const SECOND: i64 = 10_000_000;

/// Time this thread has spent on a CPU (Linux schedstat), in seconds: on a machine shared
/// with other builds, wall time says more about the neighbours than about the historian.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}
const TAGS: u32 = 10_000;

/// Feed `seconds` of 10,000 tags at 10 Hz, flushing every simulated second and sealing every
/// 300 or at 32 MB, like the writer thread; report time per simulated second and bytes/sample.
fn write_load(name: &str, value: impl Fn(u32, i64) -> f64) {
    let dir = std::env::temp_dir().join(format!("fgh-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, limits()).unwrap();
    let t0 = 17_000_000_000 * SECOND / 10;
    let seconds = 60;
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut batch: Vec<Value> = Vec::with_capacity(TAGS as usize);
    for round in 0..seconds * 10 {
        let ticks = t0 + round * SECOND / 10;
        batch.clear();
        batch.extend((0..TAGS).map(|i| Value::Float(value(i, round))));
        store.append_many(
            batch
                .iter()
                .enumerate()
                .map(|(i, v)| (TagId(i as u32), Kind::Float, ticks, Some(v), Quality::GOOD)),
        );
        if round % 10 == 9 {
            store.flush().unwrap();
            if store.open_bytes() >= 32 << 20 {
                store.seal().unwrap();
            }
        }
    }
    store.seal().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let samples = (seconds * 10) as f64 * f64::from(TAGS);
    let bytes = store
        .counters
        .segment_bytes
        .load(std::sync::atomic::Ordering::Relaxed) as f64;
    let wal = store
        .counters
        .wal_bytes
        .load(std::sync::atomic::Ordering::Relaxed) as f64;
    println!(
        "{name}: 10,000 tags x 10 Hz, {seconds} s: {:.1} % of one core on CPU ({:.1} % wall), {:.2} bytes/sample in segments, {:.2} bytes/sample through the WAL",
        100.0 * cpu / seconds as f64,
        100.0 * elapsed / seconds as f64,
        bytes / samples,
        wal / samples
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "benchmark; run with --release"]
fn historian_write_cost_and_size() {
    // The synthetic load of the OPC UA benchmark: every tag +1 per round.
    write_load("synthetic counters", |i, round| {
        round as f64 + f64::from(i) / f64::from(TAGS)
    });
    // Sensor-like: a slow wave with noise, read at 0.01 resolution (a PLC's fixed point).
    write_load("sensor 0.01 resolution", |i, round| {
        let x = (round as f64 / 50.0 + f64::from(i)).sin() * 20.0 + 200.0;
        let noise = ((round * 7919 + i64::from(i) * 104_729) % 13) as f64 / 100.0;
        ((x + noise) * 100.0).round() / 100.0
    });
    // Full-precision noise: the worst case for XOR encoding.
    write_load("full-precision noise", |i, round| {
        let h = (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(i).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        200.0 + (h >> 11) as f64 / (1u64 << 53) as f64
    });
}

#[test]
#[ignore = "benchmark; run with --release"]
fn historian_reads() {
    let dir = std::env::temp_dir().join(format!("fgh-bench-read-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(&dir, limits()).unwrap();
    let t0 = 17_000_000_000 * SECOND / 10;
    // 24 h of one 10 Hz tag beside 99 others, sealed every 300 s as the writer does.
    for round in 0..24 * 36_000i64 {
        let ticks = t0 + round * SECOND / 10;
        let v = Value::Float(((round as f64 / 600.0).sin() * 20.0 * 100.0).round() / 100.0 + 200.0);
        store
            .append_many((0..100).map(|i| (TagId(i), Kind::Float, ticks, Some(&v), Quality::GOOD)));
        if round % 3000 == 2999 {
            store.seal().unwrap();
        }
    }
    store.seal().unwrap();
    let tag = TagId(42);
    let hour_from = t0 + 12 * 3600 * SECOND;
    let started = Instant::now();
    let cpu = cpu_seconds();
    let samples = store.read(tag, hour_from, hour_from + 3600 * SECOND - 1);
    let values: Vec<_> = samples
        .iter()
        .map(|s| sample_value_for_bench(DataType::Float64, s))
        .collect();
    let raw_ms = started.elapsed().as_secs_f64() * 1e3;
    let raw_cpu_ms = (cpu_seconds() - cpu) * 1e3;
    assert_eq!(values.len(), 36_000);
    let (day_from, day_to) = (t0, t0 + 24 * 3600 * SECOND);
    let minute = 60 * SECOND;
    // What a processed read does (ua.rs `read_processed`): the Good numbers of the range
    // decoded straight from the chunks, then one pass per interval.
    let mut processed = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let cpu = cpu_seconds();
        let points = super::ua::processed_points(&store, tag, day_from, day_to);
        let minutes =
            aggregate::per_interval(Aggregate::TimeAverage, &points, day_from, day_to, minute);
        assert_eq!(minutes.len(), 1440);
        assert!(minutes.iter().all(Option::is_some));
        processed.push((
            started.elapsed().as_secs_f64() * 1e3,
            (cpu_seconds() - cpu) * 1e3,
        ));
    }
    // The same through whole `Sample`s (`Store::read`), as the processed read did before:
    // what decoding into values costs.
    let started = Instant::now();
    let cpu = cpu_seconds();
    let points: Vec<aggregate::Point> = store
        .read(tag, day_from, day_to)
        .iter()
        .filter_map(|s| Some((s.ticks, s.value.as_ref()?.as_f64()?)))
        .collect();
    let minutes =
        aggregate::per_interval(Aggregate::TimeAverage, &points, day_from, day_to, minute);
    let via_samples_ms = started.elapsed().as_secs_f64() * 1e3;
    let via_samples_cpu_ms = (cpu_seconds() - cpu) * 1e3;
    assert_eq!(minutes.len(), 1440);
    println!(
        "1 h raw read of one 10 Hz tag (36,000 values to DataValues): {raw_ms:.1} ms wall, {raw_cpu_ms:.1} ms on CPU"
    );
    for (wall, cpu) in processed {
        println!(
            "24 h TimeAverage at 1 min (864,000 samples, 1,440 intervals), the read's path: {wall:.1} ms wall, {cpu:.1} ms on CPU"
        );
    }
    println!(
        "the same through whole Samples (Store::read): {via_samples_ms:.1} ms wall, {via_samples_cpu_ms:.1} ms on CPU"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
