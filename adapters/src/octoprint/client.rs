//! The few calls of OctoPrint's REST API the adapter makes, with errors that say what to do.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde_json::Value as Json;

use super::config::ApiKey;
use super::tags::error_text;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach OctoPrint at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("OctoPrint at {url} did not answer within {ms} ms")]
    Timeout { url: String, ms: u128 },
    #[error("authentication failed: OctoPrint refused the API key (HTTP {status}: {message})")]
    Auth { status: u16, message: String },
    /// OctoPrint answers 409 when it has no connection to the printer.
    #[error("OctoPrint is running but the printer is not connected to it (HTTP 409: {0})")]
    PrinterOffline(String),
    #[error("{endpoint} answered HTTP {status}: {message}")]
    Status {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("{endpoint} answered with something that is not JSON: {reason}")]
    NotJson {
        endpoint: &'static str,
        reason: String,
    },
}

pub struct OctoPrintClient {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
}

impl OctoPrintClient {
    pub fn new(base: Url, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The printer is on the truck's own network: a proxy from the environment would
            // only get in the way.
            .no_proxy()
            .user_agent(concat!("fabrique-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))?;
        Ok(OctoPrintClient {
            http,
            base,
            timeout,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `GET` an endpoint (`api/printer`) and decode its JSON.
    pub async fn get(&self, endpoint: &'static str, key: &ApiKey) -> Result<Json, ApiError> {
        let url = self.url(endpoint)?;
        let request = self.http.get(url).header("X-Api-Key", key.expose());
        let (status, body) = self.send(request).await?;
        check(endpoint, status, &body)?;
        serde_json::from_slice(&body).map_err(|e| ApiError::NotJson {
            endpoint,
            reason: e.to_string(),
        })
    }

    /// `POST` a JSON command (OctoPrint answers 204 No Content on success).
    pub async fn post(
        &self,
        endpoint: &'static str,
        key: &ApiKey,
        command: &Json,
    ) -> Result<(), ApiError> {
        let url = self.url(endpoint)?;
        let request = self
            .http
            .post(url)
            .header("X-Api-Key", key.expose())
            .json(command);
        let (status, body) = self.send(request).await?;
        check(endpoint, status, &body)
    }

    fn url(&self, endpoint: &str) -> Result<Url, ApiError> {
        self.base.join(endpoint).map_err(|e| ApiError::Unreachable {
            url: self.base.to_string(),
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ApiError::Timeout {
                    url: self.base.to_string(),
                    ms: self.timeout.as_millis(),
                }
            } else {
                ApiError::Unreachable {
                    url: self.base.to_string(),
                    reason: chain(&e),
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        Ok((status, body.to_vec()))
    }
}

fn check(endpoint: &'static str, status: StatusCode, body: &[u8]) -> Result<(), ApiError> {
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(ApiError::Auth {
            status: status.as_u16(),
            message: error_text(body),
        }),
        StatusCode::CONFLICT => Err(ApiError::PrinterOffline(error_text(body))),
        _ => Err(ApiError::Status {
            endpoint,
            status: status.as_u16(),
            message: error_text(body),
        }),
    }
}

/// An error and its causes on one line: reqwest's own message alone ("error sending request")
/// does not say that the connection was refused.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
