//! Per-client request rate limit for the public endpoints (the survey tablet, the kiosk): a
//! token bucket per client address, so one misbehaving client cannot flood the statistics or
//! the disk while the others keep working.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;

/// Forget clients idle this long, so the table grows with active clients, not with time.
const IDLE: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Mutex<Buckets>>,
}

struct Buckets {
    per_minute: u32,
    clients: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_minute` requests a minute per client, in bursts of up to `per_minute`; 0 disables.
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimit {
            inner: Arc::new(Mutex::new(Buckets {
                per_minute,
                clients: HashMap::new(),
                last_sweep: Instant::now(),
            })),
        }
    }

    /// `Ok` to go ahead, or how long to wait before the next request would be accepted.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.inner.lock();
        let per_minute = buckets.per_minute;
        if per_minute == 0 {
            return Ok(());
        }
        if now.duration_since(buckets.last_sweep) > IDLE {
            buckets
                .clients
                .retain(|_, b| now.duration_since(b.at) < IDLE);
            buckets.last_sweep = now;
        }
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let bucket = buckets.clients.entry(client).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

/// Middleware: `router.route_layer(axum::middleware::from_fn_with_state(limit, rate_limited))`.
pub async fn rate_limited(
    State(limit): State<RateLimit>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match limit.take(client.ip(), Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let seconds = wait.as_secs().max(1);
            tracing::debug!(client = %client.ip(), "request over the rate limit");
            let body = Json(serde_json::json!({
                "error": format!("too many requests from {}; retry in {seconds} s", client.ip())
            }));
            let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_while_others_go_on() {
        let limit = RateLimit::per_minute(3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.take(a, t0).is_ok());
        }
        let wait = limit.take(a, t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limit.take(b, t0).is_ok());
        assert!(limit.take(a, t0 + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = RateLimit::per_minute(0);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..1000 {
            assert!(limit.take(a, Instant::now()).is_ok());
        }
    }
}
