//! What the benchmarks of this crate share: the gateway process, its CPU and memory from
//! `/proc`, a free loopback port and an OPC UA client session.
// Each benchmark is its own crate and uses part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{ClientBuilder, IdentityToken, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{MessageSecurityMode, UserTokenPolicy};

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Kills the gateway however the benchmark ends.
pub struct Gateway(pub Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process's user + system CPU time, in clock ticks.
pub fn cpu_ticks(pid: u32) -> f64 {
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

/// A `/proc/<pid>/status` figure in kB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The 1, 5 and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// An anonymous session without security, sized for very large subscriptions; `None` while
/// the server does not answer yet.
pub async fn connect(
    url: &str,
    application_name: &str,
) -> Option<(
    Arc<Session>,
    tokio::task::JoinHandle<opcua::types::StatusCode>,
)> {
    let mut client = ClientBuilder::new()
        .application_name(application_name)
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

/// The `--name NUMBER` options among `known`, in the order given; anything else on the command
/// line (`cargo bench` passes `--bench`) is ignored. A known option without a number panics,
/// naming it.
pub fn number_options(known: &[&'static str]) -> Vec<(&'static str, f64)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match known.iter().find(|&&k| k == args[i]) {
            Some(&name) => {
                let value = args.get(i + 1).and_then(|v| v.parse().ok());
                found.push((
                    name,
                    value.unwrap_or_else(|| panic!("{name} takes a number")),
                ));
                i += 2;
            }
            None => i += 1,
        }
    }
    found
}
