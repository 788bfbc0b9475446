//! The HTTP server: one listener for everything the gateway serves over HTTP.
//!
//! Features add their routes as separate `Router`s (the survey API and form, health, metrics)
//! and `gateway.rs` merges them here, so the listener, its limits and its shutdown live in one
//! place.

pub mod auth;
pub mod limit;

use std::net::SocketAddr;
use std::path::PathBuf;

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
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.enabled {
            self.socket_addr()?;
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
        Ok(HttpServer { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve `routes` until `shutdown`; requests in flight are allowed to finish.
    pub async fn serve(self, routes: Router, shutdown: CancellationToken) {
        let addr = self.addr;
        // Client addresses reach the handlers for rate limits and logs.
        let service = routes.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(self.listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%addr, %error, "HTTP server stopped");
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
