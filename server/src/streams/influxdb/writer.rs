//! One batch of lines to InfluxDB over HTTP, v1 (`/write?db=`) or v2 (`/api/v2/write`).
//!
//! Plain `reqwest` rather than the `influxdb2` crate: the body is already line protocol (our
//! encoder), v1 needs the same client anyway, and the 400 path needs the raw status and
//! message to find the bad line. With `gzip = true` the body is compressed (flate2, fastest
//! level: line protocol shrinks about tenfold at a small cost) and sent with
//! `Content-Encoding: gzip`, which InfluxDB 1.x/2.x/3.x and VictoriaMetrics all accept.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::{tls, Api, InfluxConfig, SinkError};

/// What InfluxDB said about a body.
#[derive(Debug)]
pub enum Outcome {
    Written,
    /// 400: at least one line is bad (syntax, field type conflict); the message says why.
    Rejected(String),
    /// Anything else: refused connection, timeout, 5xx, auth or unknown database. Keep the
    /// batch and try again later.
    Failed(String),
}

pub struct Writer {
    client: reqwest::Client,
    url: String,
    /// `Authorization` header value, if any. Never logged.
    auth: Option<String>,
    gzip: bool,
}

impl Writer {
    pub fn new(config: &InfluxConfig, token: Option<String>) -> Result<Self, SinkError> {
        let (base, client) = tls::client(config)?;
        let base = base.trim_end_matches('/');
        let url = match config.api {
            Api::V2 => format!(
                "{base}/api/v2/write?org={}&bucket={}&precision=ns",
                query_escape(&config.org),
                query_escape(&config.bucket)
            ),
            Api::V1 => format!("{base}/write?db={}", query_escape(&config.database)),
        };
        // InfluxDB 1.x takes `user:password` as Basic authentication; 2.x and 3.x a token.
        let auth = token.map(|t| match (config.api, t.split_once(':')) {
            (Api::V1, Some((user, password))) => {
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
            _ => format!("Token {t}"),
        });
        Ok(Writer {
            client,
            url,
            auth,
            gzip: config.gzip,
        })
    }

    pub async fn write(&self, body: Bytes) -> Outcome {
        let mut request = self
            .client
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8");
        request = if self.gzip {
            match gzip(&body) {
                Ok(compressed) => request.header("Content-Encoding", "gzip").body(compressed),
                // Compressing into memory cannot fail short of memory; send it plain then.
                Err(_) => request.body(body),
            }
        } else {
            request.body(body)
        };
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(error_chain(&e)),
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Written;
        }
        let text = response.text().await.unwrap_or_default();
        let message = format!("HTTP {status}: {}", text.trim());
        if status == reqwest::StatusCode::BAD_REQUEST {
            Outcome::Rejected(message)
        } else {
            Outcome::Failed(message)
        }
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}

/// reqwest's top-level message ("error sending request") hides the useful part.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn gzip_bodies_decompress_to_the_lines() {
        use std::io::Read;
        let lines = b"m,tag=a value=1 1\nm,tag=b value=2 2\n".repeat(100);
        let compressed = gzip(&lines).unwrap();
        assert!(compressed.len() < lines.len() / 4);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, lines);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_escape("my org&x=1"), "my%20org%26x%3D1");
    }
}
