//! Benchmark: does a load of alarms slow a data subscription?
//!
//! Runs the release gateway twice on a free loopback port, each time with N synthetic tags
//! changing at R Hz and one OPC UA client subscribed to all of them (sampling interval 0),
//! plus an event subscription on `Server` (every event and alarm of the gateway):
//! 1. without alarms;
//! 2. with A synthetic alarm tags, all active (limit alarms in High) and C of them a second
//!    changing level (High ↔ HighHigh), each change an alarm event (stored, persisted, sent
//!    to the event subscription).
//!
//! For each run: data notifications delivered per second against the N × R expected, their
//! latency (client receive time minus the value's source timestamp: one clock, one machine),
//! events received per second on `Server`, and the gateway's CPU share.
//!
//!     cargo bench -p fabrique-gateway --bench alarm_load
//!
//! Options: --tags N (1000), --rate HZ (10), --alarms A (1000), --alarm-changes C (100),
//! --seconds S (20), --warmup S (5).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opcua::client::{DataChangeCallback, EventCallback};
use opcua::types::{
    AttributeId, ContentFilter, DateTime, EventFilter, ExtensionObject, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NodeId, ObjectId, ObjectTypeId, ReadValueId,
    SimpleAttributeOperand, TimestampsToReturn,
};

mod support;
use support::{connect, cpu_ticks, free_port, load_average, Gateway, TICKS_PER_SECOND};

const GATEWAY: &str = env!("CARGO_BIN_EXE_fabrique-gateway");

#[derive(Clone, Copy)]
struct Options {
    tags: u32,
    rate_hz: f64,
    alarms: u32,
    alarm_changes: f64,
    seconds: f64,
    warmup: f64,
}

fn options() -> Options {
    let mut o = Options {
        tags: 1_000,
        rate_hz: 10.0,
        alarms: 1_000,
        alarm_changes: 100.0,
        seconds: 20.0,
        warmup: 5.0,
    };
    for (name, n) in support::number_options(&[
        "--tags",
        "--rate",
        "--alarms",
        "--alarm-changes",
        "--seconds",
        "--warmup",
    ]) {
        match name {
            "--tags" => o.tags = n as u32,
            "--rate" => o.rate_hz = n,
            "--alarms" => o.alarms = n as u32,
            "--alarm-changes" => o.alarm_changes = n,
            "--seconds" => o.seconds = n,
            "--warmup" => o.warmup = n,
            _ => unreachable!("{name} is not one of the options"),
        }
    }
    o
}

/// Milliseconds from `then` to now (both on this machine's clock).
fn ms_since(then: &DateTime) -> f64 {
    let now = DateTime::now();
    (now.as_chrono() - then.as_chrono())
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1000.0
}

struct Measured {
    delivered_per_s: f64,
    expected_per_s: f64,
    latency_ms: (f64, f64, f64, f64),
    events_per_s: f64,
    gateway_cpu_pct: f64,
    load: String,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(o: Options, alarms: u32, alarm_changes: f64) -> Measured {
    let port = free_port();
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let workdir = std::env::temp_dir().join(format!(
        "fabrique-bench-alarms-{}-{alarms}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&workdir);
    std::fs::create_dir_all(&workdir).expect("cannot create the bench's working directory");
    let child = Command::new(GATEWAY)
        .current_dir(&workdir)
        .env(
            "FABRIQUE__OPCUA__PKI_DIR",
            std::env::temp_dir().join("fabrique-bench-pki"),
        )
        .env("FABRIQUE__OPCUA__PORT", port.to_string())
        .env("FABRIQUE__HTTP__PORT", free_port().to_string())
        .env("FABRIQUE__SIMULATION__SYNTHETIC__TAGS", o.tags.to_string())
        .env(
            "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ",
            o.rate_hz.to_string(),
        )
        .env(
            "FABRIQUE__SIMULATION__SYNTHETIC__ALARM_TAGS",
            alarms.to_string(),
        )
        .env(
            "FABRIQUE__SIMULATION__SYNTHETIC__ALARM_CHANGES_HZ",
            alarm_changes.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the gateway");
    let gateway = Gateway(child);
    let pid = gateway.0.id();
    let spawned = Instant::now();
    let mut connection = None;
    while spawned.elapsed() < Duration::from_secs(60) {
        if let Some(c) = connect(&url, "Fabrique alarm-load benchmark client").await {
            connection = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (session, _event_loop) =
        connection.expect("the gateway did not accept a session within 60 s");
    let ns = session
        .get_namespace_index("urn:fabrique-gateway:instances")
        .await
        .expect("instances namespace");

    // The data subscription: every synthetic tag, report by exception.
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::with_capacity(1 << 20)));
    let (counter, lat) = (received.clone(), latencies.clone());
    let data = session
        .create_subscription(
            Duration::from_millis(100),
            600,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |value, _| {
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(t) = &value.source_timestamp {
                    if let Ok(mut l) = lat.lock() {
                        l.push(ms_since(t));
                    }
                }
            }),
        )
        .await
        .expect("create subscription");
    let items: Vec<MonitoredItemCreateRequest> = (0..o.tags)
        .map(|i| MonitoredItemCreateRequest {
            item_to_monitor: ReadValueId::from(NodeId::new(
                ns,
                format!("Fabrique/Stations/Synthetic/Load/T{i:06}"),
            )),
            monitoring_mode: MonitoringMode::Reporting,
            requested_parameters: MonitoringParameters {
                client_handle: 0,
                sampling_interval: 0.0,
                filter: ExtensionObject::null(),
                queue_size: 10,
                discard_oldest: true,
            },
        })
        .collect();
    let results = session
        .create_monitored_items(data, TimestampsToReturn::Both, items)
        .await
        .expect("create monitored items");
    let bad = results
        .iter()
        .filter(|r| !r.result.status_code.is_good())
        .count();
    assert_eq!(bad, 0, "{bad} monitored items were refused");

    // The event subscription on Server: every event and alarm state change.
    let events = Arc::new(AtomicU64::new(0));
    let event_counter = events.clone();
    let on_server = session
        .create_subscription(
            Duration::from_millis(100),
            600,
            20,
            0,
            0,
            true,
            EventCallback::new(move |_, _| {
                event_counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await
        .expect("create event subscription");
    let filter = EventFilter {
        select_clauses: Some(vec![
            SimpleAttributeOperand::new_value(ObjectTypeId::BaseEventType, "EventId"),
            SimpleAttributeOperand::new_value(ObjectTypeId::BaseEventType, "Severity"),
            SimpleAttributeOperand::new_value(ObjectTypeId::BaseEventType, "Time"),
        ]),
        where_clause: ContentFilter::default(),
    };
    let results = session
        .create_monitored_items(
            on_server,
            TimestampsToReturn::Neither,
            vec![MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId {
                    node_id: ObjectId::Server.into(),
                    attribute_id: AttributeId::EventNotifier as u32,
                    ..Default::default()
                },
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: 1,
                    sampling_interval: 0.0,
                    filter: ExtensionObject::from_message(filter),
                    queue_size: 10_000,
                    discard_oldest: true,
                },
            }],
        )
        .await
        .expect("create the event monitored item");
    assert!(
        results[0].result.status_code.is_good(),
        "event item refused: {}",
        results[0].result.status_code
    );

    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    latencies.lock().map(|mut l| l.clear()).ok();
    let (n0, e0, cpu0, t0) = (
        received.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed),
        cpu_ticks(pid),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(o.seconds)).await;
    let (n1, e1, cpu1, elapsed) = (
        received.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed),
        cpu_ticks(pid),
        t0.elapsed().as_secs_f64(),
    );
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let _ = session.disconnect().await;
    drop(gateway);
    let _ = std::fs::remove_dir_all(&workdir);
    Measured {
        delivered_per_s: (n1 - n0) as f64 / elapsed,
        expected_per_s: f64::from(o.tags) * o.rate_hz,
        latency_ms: (
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
        ),
        events_per_s: (e1 - e0) as f64 / elapsed,
        gateway_cpu_pct: (cpu1 - cpu0) / TICKS_PER_SECOND / elapsed * 100.0,
        load: load_average(),
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    println!(
        "data: {} tags x {} Hz, sampling 0, publishing 100 ms; event item on Server; {} s after {} s warm-up",
        o.tags, o.rate_hz, o.seconds, o.warmup
    );
    println!("| alarm load | data delivered/s (of expected) | latency p50 / p95 / p99 / max | events/s on Server | gateway CPU | load average |");
    println!("|---|---:|---:|---:|---:|---|");
    for (label, alarms, changes) in [
        ("none".to_owned(), 0, 0.0),
        (
            format!("{} active, {}/s changes", o.alarms, o.alarm_changes),
            o.alarms,
            o.alarm_changes,
        ),
    ] {
        let m = run(o, alarms, changes).await;
        let (p50, p95, p99, max) = m.latency_ms;
        println!(
            "| {label} | {:.0} ({:.3}) | {p50:.1} / {p95:.1} / {p99:.1} / {max:.0} ms | {:.1} | {:.0} % | {} |",
            m.delivered_per_s,
            m.delivered_per_s / m.expected_per_s,
            m.events_per_s,
            m.gateway_cpu_pct,
            m.load
        );
    }
}
