//! The HTTP accept loop, with the limits a LAN-exposed listener needs: a global and a
//! per-client connection cap, hyper's header-read timeout (which also closes a connection that
//! sends nothing) and a pause on `accept()` failures, so that running out of descriptors never
//! turns into a busy loop. `axum::serve` exposes none of these knobs, so the loop is ours;
//! the connection itself is hyper's HTTP/1 server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

/// How long requests in flight may take to finish once the gateway stops.
const DRAIN: Duration = Duration::from_secs(5);
/// Refused connections and accept failures are logged at most this often, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The limits of [`serve`], from `[http]`.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
}

/// Open connections per client address; a slot is given back when its guard drops.
#[derive(Clone, Default)]
struct PerClient {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

struct ClientSlot {
    table: PerClient,
    client: IpAddr,
}

impl PerClient {
    fn take(&self, client: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.open.lock();
        let count = open.entry(client).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            table: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// One log line per interval for a condition that can repeat thousands of times a second.
struct RateLimitedLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    fn new() -> Self {
        RateLimitedLog {
            last: None,
            unlogged: 0,
        }
    }

    /// `Some(count not logged since the last line)` when a line is due now.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < LOG_INTERVAL)
        {
            self.unlogged += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Global,
    PerClient,
}

/// Serve `routes` on `listener` until `shutdown`; requests in flight get [`DRAIN`] to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections));
    let per_client = PerClient::default();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut accept_log = RateLimitedLog::new();
    let mut refused_log = RateLimitedLog::new();
    let mut pause = Duration::ZERO;
    let body_timeout = limits.body_read_timeout;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                pause = Duration::ZERO;
                accepted
            }
            Err(error) => {
                // Out of descriptors (or memory), the same accept fails again at once: wait,
                // 10 ms doubling to 1 s, like the OPC UA listener (vendor/async-opcua-server).
                pause = (pause * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                if let Some(unlogged) = accept_log.due() {
                    tracing::error!(%error, unlogged, pause_ms = pause.as_millis() as u64, "HTTP: cannot accept a connection");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let admitted = admit(&global, &per_client, &limits, peer.ip());
        let (permit, slot) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // Closing at once frees the descriptor; the client sees a reset and retries.
                drop(stream);
                if let Some(unlogged) = refused_log.due() {
                    tracing::warn!(client = %peer.ip(), reason = ?refusal, unlogged, "HTTP: connection refused (`http.max_connections`, `http.max_connections_per_client`)");
                }
                continue;
            }
        };
        let service = {
            let routes = routes.clone();
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                // A body that stops arriving ends the request (tower-http's TimeoutBody): the
                // handler sees a body error, never a half-read answer.
                let request = request.map(|body| Body::new(TimeoutBody::new(body_timeout, body)));
                let routes = routes.clone();
                async move {
                    let response = match routes.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(DRAIN, connection.as_mut()).await.unwrap_or(Ok(()))
                }
            };
            if let Err(error) = result {
                // Timeouts and clients that go away mid-request: routine on a LAN.
                tracing::debug!(client = %peer.ip(), %error, "HTTP connection closed");
            }
        });
    }
    // Every connection holds a permit: all of them back means every connection has ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN, global.acquire_many(all)).await;
}

fn admit(
    global: &Arc<Semaphore>,
    per_client: &PerClient,
    limits: &ConnectionLimits,
    client: IpAddr,
) -> Result<(OwnedSemaphorePermit, ClientSlot), Refusal> {
    let permit = global
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::Global)?;
    let slot = per_client
        .take(client, limits.max_connections_per_client)
        .ok_or(Refusal::PerClient)?;
    Ok((permit, slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_share_and_its_slots_come_back() {
        let table = PerClient::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = table.take(a, 2).unwrap();
        let _second = table.take(a, 2).unwrap();
        assert!(table.take(a, 2).is_none());
        assert!(table.take(b, 2).is_some(), "another client goes on");
        drop(first);
        assert!(table.take(a, 2).is_some());
    }

    #[test]
    fn the_global_cap_refuses_before_the_client_cap() {
        let limits = ConnectionLimits {
            max_connections: 1,
            max_connections_per_client: 8,
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
        };
        let global = Arc::new(Semaphore::new(1));
        let table = PerClient::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let held = admit(&global, &table, &limits, a).unwrap();
        assert_eq!(
            admit(&global, &table, &limits, a).err(),
            Some(Refusal::Global)
        );
        drop(held);
        assert!(admit(&global, &table, &limits, a).is_ok());
    }
}
