//! The HTTP client of the InfluxDB sink, with https when the url says so: rustls with the ring
//! provider (as the MQTT clients), the system's roots plus `ca_file`, an optional client
//! certificate, and `server_name` for a database reached by IP address whose certificate
//! names a host.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{InfluxConfig, SinkError};

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, SinkError> {
    std::fs::read(path).map_err(|e| SinkError::Tls {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// The base URL the writer posts to, and the client.
pub fn client(config: &InfluxConfig) -> Result<(String, reqwest::Client), SinkError> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5));
    let mut base = config.url.clone();
    if config.url.starts_with("https://") {
        fabrique_adapters::mqtt::connection::install_ring_provider();
        builder = builder.use_rustls_tls();
        if let Some(path) = &config.ca_file {
            let pem = read("ca_file", path)?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SinkError::Tls {
                    key: "ca_file",
                    reason: format!("{}: {e}", path.display()),
                })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
            let mut pem = read("client_cert_file", cert)?;
            pem.push(b'\n');
            pem.extend(read("client_key_file", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| SinkError::Tls {
                key: "client_cert_file",
                reason: format!("{} and {}: {e}", cert.display(), key.display()),
            })?;
            builder = builder.identity(identity);
        }
        if let Some(name) = &config.server_name {
            // Connect to the address of the url, verify the certificate against `name`.
            let (host, port) = host_port(&config.url).ok_or_else(|| SinkError::Tls {
                key: "server_name",
                reason: format!("cannot read host and port from url `{}`", config.url),
            })?;
            let ip: IpAddr = host.parse().map_err(|_| SinkError::Tls {
                key: "server_name",
                reason: format!("needs a url with an IP address, not `{host}`"),
            })?;
            builder = builder.resolve(name, SocketAddr::new(ip, port));
            base = config
                .url
                .replacen(&format!("//{host}"), &format!("//{name}"), 1);
        }
    }
    Ok((base, builder.build()?))
}

/// `https://10.0.0.5:8086/x` → (`10.0.0.5`, 8086); `[::1]` keeps its brackets in the url but
/// not in the host. The port defaults to 443.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = port.map_or(Some(443), |p| p.parse().ok())?;
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            host_port("https://10.0.0.5:8086/x"),
            Some(("10.0.0.5".into(), 8086))
        );
        assert_eq!(host_port("https://db"), Some(("db".into(), 443)));
        assert_eq!(host_port("https://[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(host_port("https://db:x"), None);
    }
}
