//! The OPC UA load client of the side-by-side benchmark (bench/opcua-peer/run.sh): the same
//! client, with the same settings, for the gateway and for the open62541 peer.
//!
//! Connects (security None, anonymous), makes S subscriptions (publishing interval 100 ms) of
//! N/S monitored items each (sampling interval 0, queue 10, discard oldest) on the NodeIds
//! `ns=<urn:fabrique-gateway:instances>;s=Fabrique/Stations/Synthetic/Load/T000000...`, which
//! both servers serve, waits a warm-up, then counts the data change notifications it receives,
//! second by second, and reads the server's CPU time and memory from /proc.
//!
//!     load_client --url opc.tcp://127.0.0.1:4855/ --server-pid PID --label open62541 \
//!         --tags 100000 [--subscriptions 10] [--rate 10] [--seconds 20] [--warmup 5] \
//!         [--publish-ms 100] [--queue 10] [--spawned-at-ms UNIX_MS] [--metrics HOST:PORT]
//!
//! With `--metrics` (the gateway's HTTP address), the gateway's bus counters are read at the
//! start and the end of the window: `produced` is the tag changes the synthetic device really
//! put on the bus over the expected count (a device starved of CPU skips rounds, which lowers
//! `ratio` with nothing lost), and `lagged` the bus batches a consumer missed (the OPC UA
//! bridge resynchronising from the latest values: changes lost on the gateway's side).
//!
//! Prints one `second=K delivered=D` line per second of the window, then one `RESULT` line of
//! key=value pairs that run.sh turns into the table (see BENCHMARKS.md for what each means).
//! The logic follows server/benches/opcua_subscribe.rs (one subscription, the gateway only).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    ExtensionObject, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, TimestampsToReturn, UserTokenPolicy,
};

/// Linux `USER_HZ`: /proc CPU times are in these ticks.
const TICKS_PER_SECOND: f64 = 100.0;
const NAMESPACE_URI: &str = "urn:fabrique-gateway:instances";
const FOLDER: &str = "Fabrique/Stations/Synthetic/Load";

struct Options {
    url: String,
    label: String,
    server_pid: u32,
    tags: u32,
    subscriptions: u32,
    rate_hz: f64,
    seconds: u64,
    warmup: f64,
    publish_ms: f64,
    queue: u32,
    spawned_at_ms: Option<u128>,
    metrics: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        url: String::new(),
        label: "server".into(),
        server_pid: 0,
        tags: 10_000,
        subscriptions: 10,
        rate_hz: 10.0,
        seconds: 20,
        warmup: 5.0,
        publish_ms: 100.0,
        queue: 10,
        spawned_at_ms: None,
        metrics: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let bad = |key: &str| -> ! {
            eprintln!("{key}: bad value {value:?}");
            std::process::exit(2)
        };
        match pair[0].as_str() {
            "--url" => o.url = value.clone(),
            "--label" => o.label = value.clone(),
            "--server-pid" => o.server_pid = value.parse().unwrap_or_else(|_| bad("--server-pid")),
            "--tags" => o.tags = value.parse().unwrap_or_else(|_| bad("--tags")),
            "--subscriptions" => {
                o.subscriptions = value.parse().unwrap_or_else(|_| bad("--subscriptions"))
            }
            "--rate" => o.rate_hz = value.parse().unwrap_or_else(|_| bad("--rate")),
            "--seconds" => o.seconds = value.parse().unwrap_or_else(|_| bad("--seconds")),
            "--warmup" => o.warmup = value.parse().unwrap_or_else(|_| bad("--warmup")),
            "--publish-ms" => o.publish_ms = value.parse().unwrap_or_else(|_| bad("--publish-ms")),
            "--queue" => o.queue = value.parse().unwrap_or_else(|_| bad("--queue")),
            "--spawned-at-ms" => {
                o.spawned_at_ms = Some(value.parse().unwrap_or_else(|_| bad("--spawned-at-ms")))
            }
            "--metrics" => o.metrics = Some(value.clone()),
            other => {
                eprintln!("unknown option {other}");
                std::process::exit(2)
            }
        }
    }
    if o.url.is_empty() || o.server_pid == 0 || o.subscriptions == 0 {
        eprintln!("--url, --server-pid and a non-zero --subscriptions are required");
        std::process::exit(2)
    }
    o
}

/// The gateway's bus counters (changes accepted, batches missed by lagging consumers) from
/// its `/metrics`; `None` when there is no address or no answer.
async fn bus_counters(address: Option<&str>) -> Option<(f64, f64)> {
    let address = address?.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        let sample = |name: &str| -> Option<f64> {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        Some((
            sample("fabrique_bus_changes_total")?,
            sample("fabrique_bus_lagged_batches_total")?,
        ))
    })
    .await
    .ok()?
}

fn cpu_ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    field(14) + field(15)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

async fn connect(
    url: &str,
) -> Option<(
    Arc<Session>,
    tokio::task::JoinHandle<opcua::types::StatusCode>,
)> {
    let mut client = ClientBuilder::new()
        .application_name("Fabrique benchmark client")
        .application_uri("urn:fabrique-gateway:bench")
        .trust_server_certs(true)
        .create_sample_keypair(false)
        .session_retry_limit(0)
        .max_array_length(10_000_000)
        .max_message_size(512 * 1024 * 1024)
        .max_chunk_count(0)
        .max_string_length(16 * 1024 * 1024)
        .client()
        .ok()?;
    let endpoint = (
        url,
        SecurityPolicy::None.to_str(),
        MessageSecurityMode::None,
        UserTokenPolicy::anonymous(),
    );
    let (session, event_loop) = client
        .connect_to_matching_endpoint(endpoint, IdentityToken::Anonymous)
        .await
        .ok()?;
    let handle = event_loop.spawn();
    tokio::time::timeout(Duration::from_secs(5), session.wait_for_connection())
        .await
        .ok()?;
    Some((session, handle))
}

#[tokio::main]
async fn main() {
    let o = options();
    let pid = o.server_pid;
    let began = Instant::now();
    let mut connection = None;
    while began.elapsed() < Duration::from_secs(120) {
        if let Some(c) = connect(&o.url).await {
            connection = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // From the server's spawn (run.sh's clock) to an open session.
    let startup_ms = o
        .spawned_at_ms
        .map(|spawned| unix_ms().saturating_sub(spawned));
    let Some((session, _event_loop)) = connection else {
        eprintln!("{}: no session within 120 s at {}", o.label, o.url);
        std::process::exit(1)
    };
    let ns = session
        .get_namespace_index(NAMESPACE_URI)
        .await
        .unwrap_or_else(|e| {
            eprintln!("{}: no namespace {NAMESPACE_URI}: {e}", o.label);
            std::process::exit(1)
        });

    let received = Arc::new(AtomicU64::new(0));
    let per_subscription = o.tags.div_ceil(o.subscriptions);
    let ids: Vec<u32> = (0..o.tags).collect();
    let mut subscribe_time = Duration::ZERO;
    for chunk in ids.chunks(per_subscription as usize) {
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
        let items: Vec<MonitoredItemCreateRequest> = chunk
            .iter()
            .map(|i| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(NodeId::new(ns, format!("{FOLDER}/T{i:06}"))),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: *i,
                    sampling_interval: 0.0,
                    filter: ExtensionObject::null(),
                    queue_size: o.queue,
                    discard_oldest: true,
                },
            })
            .collect();
        // Only the CreateMonitoredItems calls are timed (not the subscriptions).
        let creating = Instant::now();
        let results = session
            .create_monitored_items(subscription, TimestampsToReturn::Both, items)
            .await
            .expect("create monitored items");
        subscribe_time += creating.elapsed();
        let bad = results
            .iter()
            .filter(|r| !r.result.status_code.is_good())
            .count();
        if bad > 0 {
            eprintln!(
                "{}: {bad} of {} monitored items were refused",
                o.label,
                chunk.len()
            );
            std::process::exit(1)
        }
    }

    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
    let bus0 = bus_counters(o.metrics.as_deref()).await;
    let (n0, cpu0, own0, t0) = (
        received.load(Ordering::Relaxed),
        cpu_ticks(pid),
        cpu_ticks(std::process::id()),
        Instant::now(),
    );
    // One-second windows on a fixed grid from t0, so that a slow loop does not stretch them.
    let mut previous = n0;
    let mut windows = Vec::with_capacity(o.seconds as usize);
    for second in 1..=o.seconds {
        tokio::time::sleep_until((t0 + Duration::from_secs(second)).into()).await;
        let now = received.load(Ordering::Relaxed);
        windows.push(now - previous);
        println!("second={second} delivered={}", now - previous);
        previous = now;
    }
    let (n1, cpu1, own1, elapsed) = (
        received.load(Ordering::Relaxed),
        cpu_ticks(pid),
        cpu_ticks(std::process::id()),
        t0.elapsed().as_secs_f64(),
    );

    let bus1 = bus_counters(o.metrics.as_deref()).await;
    let (produced, lagged) = match (bus0, bus1) {
        (Some((c0, l0)), Some((c1, l1))) => (
            format!("{:.3}", (c1 - c0) / elapsed / (f64::from(o.tags) * o.rate_hz)),
            format!("{}", l1 - l0),
        ),
        _ => ("-".to_string(), "-".to_string()),
    };
    let delivered = (n1 - n0) as f64;
    let expected_per_s = f64::from(o.tags) * o.rate_hz;
    let cpu_s = (cpu1 - cpu0) / TICKS_PER_SECOND;
    let us_per_notification = if delivered > 0.0 {
        cpu_s * 1e6 / delivered
    } else {
        f64::NAN
    };
    println!(
        "RESULT server={} tags={} subscriptions={} window_s={:.1} delivered_per_s={:.0} \
         ratio={:.3} cpu_pct={:.0} rss_mb={:.0} peak_rss_mb={:.0} us_per_notification={:.2} \
         min_window={} max_window={} startup_ms={} create_items_ms={} client_cpu_pct={:.0} \
         produced={} lagged={}",
        o.label,
        o.tags,
        o.subscriptions,
        elapsed,
        delivered / elapsed,
        delivered / elapsed / expected_per_s,
        cpu_s / elapsed * 100.0,
        status_kb(pid, "VmRSS:") as f64 / 1024.0,
        status_kb(pid, "VmHWM:") as f64 / 1024.0,
        us_per_notification,
        windows.iter().min().copied().unwrap_or(0),
        windows.iter().max().copied().unwrap_or(0),
        startup_ms.map_or("-".to_string(), |s| s.to_string()),
        subscribe_time.as_millis(),
        (own1 - own0) / TICKS_PER_SECOND / elapsed * 100.0,
        produced,
        lagged,
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), session.disconnect()).await;
}
