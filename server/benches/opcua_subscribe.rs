//! Benchmark: N synthetic tags changing at R Hz, one OPC UA client subscribed to all of them.
//!
//! Starts the release gateway on a free loopback port, subscribes with sampling interval 0
//! (report by exception), then measures over a window: notifications delivered per second
//! against the N x R expected, the gateway's CPU share and RSS, and its startup time.
//!
//!     cargo bench -p fabrique-gateway --bench opcua_subscribe -- --tags 100000
//!
//! Options: --tags N (10000), --rate HZ (10), --seconds S (20), --warmup S (5),
//! --publish-ms MS (100), --queue Q (10).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua::client::DataChangeCallback;
use opcua::types::{
    ExtensionObject, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId,
    ReadValueId, TimestampsToReturn,
};

mod support;
use support::{connect, cpu_ticks, free_port, status_kb, Gateway, TICKS_PER_SECOND};

const GATEWAY: &str = env!("CARGO_BIN_EXE_fabrique-gateway");
struct Options {
    tags: u32,
    rate_hz: f64,
    seconds: f64,
    warmup: f64,
    publish_ms: f64,
    queue: u32,
}

fn options() -> Options {
    let mut o = Options {
        tags: 10_000,
        rate_hz: 10.0,
        seconds: 20.0,
        warmup: 5.0,
        publish_ms: 100.0,
        queue: 10,
    };
    for (name, n) in support::number_options(&[
        "--tags",
        "--rate",
        "--seconds",
        "--warmup",
        "--publish-ms",
        "--queue",
    ]) {
        match name {
            "--tags" => o.tags = n as u32,
            "--rate" => o.rate_hz = n,
            "--seconds" => o.seconds = n,
            "--warmup" => o.warmup = n,
            "--publish-ms" => o.publish_ms = n,
            "--queue" => o.queue = n as u32,
            _ => unreachable!("{name} is not one of the options"),
        }
    }
    o
}

#[tokio::main]
async fn main() {
    let o = options();
    let port = free_port();
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    // A fresh working directory: the gateway's data (history, SQLite stores) and PKI stay out
    // of the source tree, and no run starts with what an earlier one stored.
    let workdir = std::env::temp_dir().join(format!("fabrique-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("cannot create the bench's working directory");
    let spawned = Instant::now();
    let child = Command::new(GATEWAY)
        .current_dir(&workdir)
        // The PKI is kept from run to run, so that startup does not include making a key pair.
        .env(
            "FABRIQUE__OPCUA__PKI_DIR",
            std::env::temp_dir().join("fabrique-bench-pki"),
        )
        .env("FABRIQUE__OPCUA__PORT", port.to_string())
        .env("FABRIQUE__SIMULATION__SYNTHETIC__TAGS", o.tags.to_string())
        .env(
            "FABRIQUE__SIMULATION__SYNTHETIC__RATE_HZ",
            o.rate_hz.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the gateway");
    let gateway = Gateway(child);
    let pid = gateway.0.id();

    let mut connection = None;
    while spawned.elapsed() < Duration::from_secs(60) {
        if let Some(c) = connect(&url, "Fabrique benchmark client").await {
            connection = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let startup = spawned.elapsed();
    let (session, _event_loop) =
        connection.expect("the gateway did not accept a session within 60 s");
    let ns = session
        .get_namespace_index("urn:fabrique-gateway:instances")
        .await
        .expect("instances namespace");

    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let subscription = session
        .create_subscription(
            Duration::from_secs_f64(o.publish_ms / 1000.0),
            600,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await
        .expect("create subscription");
    let subscribing = Instant::now();
    let ids: Vec<u32> = (0..o.tags).collect();
    for chunk in ids.chunks(10_000) {
        let items: Vec<MonitoredItemCreateRequest> = chunk
            .iter()
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
                    queue_size: o.queue,
                    discard_oldest: true,
                },
            })
            .collect();
        let results = session
            .create_monitored_items(subscription, TimestampsToReturn::Both, items)
            .await
            .expect("create monitored items");
        let bad = results
            .iter()
            .filter(|r| !r.result.status_code.is_good())
            .count();
        assert_eq!(bad, 0, "{bad} monitored items were refused");
    }
    let subscribe_time = subscribing.elapsed();

    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let (n0, cpu0, t0) = (
        received.load(Ordering::Relaxed),
        cpu_ticks(pid),
        Instant::now(),
    );
    let own0 = cpu_ticks(std::process::id());
    // Notifications per one-second window, to see bursts and gaps (delivery should be smooth).
    let mut windows = Vec::new();
    let mut last = n0;
    let end = t0 + Duration::from_secs_f64(o.seconds);
    while Instant::now() + Duration::from_secs(1) <= end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = received.load(Ordering::Relaxed);
        windows.push(now - last);
        last = now;
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    let (n1, cpu1, elapsed) = (
        received.load(Ordering::Relaxed),
        cpu_ticks(pid),
        t0.elapsed().as_secs_f64(),
    );
    let own1 = cpu_ticks(std::process::id());

    let delivered = (n1 - n0) as f64 / elapsed;
    let expected = f64::from(o.tags) * o.rate_hz;
    let cpu = (cpu1 - cpu0) / TICKS_PER_SECOND / elapsed * 100.0;
    let own_cpu = (own1 - own0) / TICKS_PER_SECOND / elapsed * 100.0;
    let peak_mb = status_kb(pid, "VmHWM:") as f64 / 1024.0;
    let rss_mb = status_kb(pid, "VmRSS:") as f64 / 1024.0;
    println!(
        "tags={} rate_hz={} publish_ms={} queue={} window_s={:.1}",
        o.tags, o.rate_hz, o.publish_ms, o.queue, elapsed
    );
    println!("startup_to_first_session_ms={}", startup.as_millis());
    println!("create_monitored_items_ms={}", subscribe_time.as_millis());
    println!(
        "delivered_per_s={delivered:.0} expected_per_s={expected:.0} ratio={:.3}",
        delivered / expected
    );
    let expected_window = f64::from(o.tags) * o.rate_hz;
    let min_window = windows.iter().copied().min().unwrap_or(0);
    let max_window = windows.iter().copied().max().unwrap_or(0);
    let below_half = windows
        .iter()
        .filter(|&&w| (w as f64) < expected_window / 2.0)
        .count();
    println!(
        "one_second_windows={} min_per_s={min_window} max_per_s={max_window} windows_below_half_expected={below_half}",
        windows.len()
    );
    println!("gateway_cpu_pct={cpu:.0} gateway_rss_mb={rss_mb:.0} gateway_peak_rss_mb={peak_mb:.0} client_cpu_pct={own_cpu:.0}");
    println!(
        "| {} | {:.3} ({:.0}/s of {:.0}/s) | {:.0} % | {:.0} MB | {:.0} MB | {} ms |",
        o.tags,
        delivered / expected,
        delivered,
        expected,
        cpu,
        rss_mb,
        peak_mb,
        startup.as_millis()
    );
    let _ = session.disconnect().await;
    drop(gateway);
    let _ = std::fs::remove_dir_all(&workdir);
}
