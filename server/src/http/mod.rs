//! The HTTP server: one listener for everything the gateway serves over HTTP.
//!
//! Features add their routes as separate `Router`s (the survey API and form, health, metrics)
//! and `gateway.rs` merges them here, so the listener, its limits and its shutdown live in one
//! place.

pub mod auth;
pub mod limit;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::routing::MethodRouter;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Loopback by default, like the OPC UA endpoint; the tablet at the exit reaches it through
    /// the truck's LAN address once the crew sets one.
    pub host: String,
    pub port: u16,
    /// Environment variable holding the bearer token of the admin endpoints.
    pub admin_token_env: String,
    /// Or a file holding it (wins when set). With neither, admin endpoints answer 403.
    pub admin_token_file: Option<PathBuf>,
    /// Requests a minute per client address on the public endpoints (survey, orders);
    /// 0: no limit.
    pub public_rate_per_minute: u32,
    /// Connections open at once, all clients together; more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// A request's headers must arrive within this, counted from when the connection waits
    /// for a request: it also closes a connection that sends nothing (idle, keep-alive).
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this, counted from its headers.
    pub body_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 8080,
            admin_token_env: "FABRIQUE_ADMIN_TOKEN".into(),
            admin_token_file: None,
            public_rate_per_minute: 120,
            max_connections: 256,
            max_connections_per_client: 32,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled {
            let addr = self.socket_addr()?;
            // The server binds this at start: an address of another machine fails then.
            if std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).is_err() {
                return Err((
                    "http.host",
                    format!("`{}` is not an address of this machine", self.host),
                ));
            }
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err((
                "http.max_connections",
                "must be between 1 and 100000".into(),
            ));
        }
        if !(1..=self.max_connections).contains(&self.max_connections_per_client) {
            return Err((
                "http.max_connections_per_client",
                format!(
                    "must be between 1 and `http.max_connections` ({})",
                    self.max_connections
                ),
            ));
        }
        for (key, value) in [
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
            ("http.body_read_timeout_ms", self.body_read_timeout_ms),
        ] {
            if !(100..=600_000).contains(&value) {
                return Err((key, "must be between 100 and 600000 (ms)".into()));
            }
        }
        Ok(())
    }

    /// The admin token from `admin_token_file`, else from the variable `admin_token_env`.
    pub fn admin_token(&self) -> Result<auth::AdminToken, HttpError> {
        let token = match &self.admin_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| HttpError::TokenFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(&self.admin_token_env).ok(),
        };
        Ok(auth::AdminToken::new(token))
    }

    pub fn socket_addr(&self) -> Result<SocketAddr, (&'static str, String)> {
        format!("{}:{}", self.host, self.port)
            .parse()
            .map_err(|_| ("http.host", format!("`{}` is not an IP address", self.host)))
    }
}

/// What guards the routes: the admin token for admin endpoints, the per-client rate limit for
/// public ones. Features wrap their routes with it instead of building their own.
#[derive(Clone)]
pub struct Guards {
    admin: auth::AdminToken,
    public: limit::RateLimit,
}

impl Guards {
    pub fn new(config: &HttpConfig) -> Result<Self, HttpError> {
        Ok(Guards {
            admin: config.admin_token()?,
            public: limit::RateLimit::per_minute(config.public_rate_per_minute),
        })
    }

    /// Only with `Authorization: Bearer <admin token>`.
    pub fn admin<S: Clone + Send + Sync + 'static>(
        &self,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        route.route_layer(axum::middleware::from_fn_with_state(
            self.admin.clone(),
            auth::require_admin,
        ))
    }

    /// Open to anyone, at most `http.public_rate_per_minute` requests a minute per client.
    pub fn public<S: Clone + Send + Sync + 'static>(
        &self,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        route.route_layer(axum::middleware::from_fn_with_state(
            self.public.clone(),
            limit::rate_limited,
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid `{key}`: {reason}")]
    Config { key: &'static str, reason: String },
    #[error("cannot read the admin token file {path} (`http.admin_token_file`): {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on http://{addr} (set `http.port` or `http.host`): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound listener: binding happens before the gateway reports ready, so a port already in use
/// stops the start with a clear error instead of a silent half-gateway.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    limits: serve::ConnectionLimits,
}

impl HttpServer {
    pub async fn bind(config: &HttpConfig) -> Result<Self, HttpError> {
        let addr = config
            .socket_addr()
            .map_err(|(key, reason)| HttpError::Config { key, reason })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let limits = serve::ConnectionLimits {
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
        };
        Ok(HttpServer {
            listener,
            addr,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `routes` until `shutdown`; requests in flight are allowed to finish.
    pub async fn serve(self, routes: Router, shutdown: CancellationToken) {
        serve::serve(self.listener, routes, self.limits, shutdown).await;
    }

    /// Lower the global connection cap so that HTTP cannot take the descriptors kept for
    /// OPC UA, the sinks and the stores (see `fd_budget.rs`).
    pub fn cap_connections(&mut self, max: usize) {
        if max < self.limits.max_connections {
            tracing::warn!(
                configured = self.limits.max_connections,
                max,
                "`http.max_connections` lowered to fit the descriptor limit"
            );
            self.limits.max_connections = max.max(1);
            self.limits.max_connections_per_client = self
                .limits
                .max_connections_per_client
                .min(self.limits.max_connections);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_that_is_not_an_address_names_the_key() {
        let config = HttpConfig {
            host: "localhost".into(),
            ..HttpConfig::default()
        };
        let (key, reason) = config.validate().unwrap_err();
        assert_eq!(key, "http.host");
        assert!(reason.contains("localhost"), "{reason}");
    }

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = HttpConfig {
            port: taken.local_addr().unwrap().port(),
            ..HttpConfig::default()
        };
        let error = HttpServer::bind(&config).await.err().unwrap().to_string();
        assert!(error.contains("http.port"), "{error}");
    }
}
