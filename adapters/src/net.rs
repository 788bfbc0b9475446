//! Host names and addresses in the configuration: the one syntax check every `host`, address
//! and URL of the configuration goes through, so `check` refuses what a connect or a bind
//! would refuse later (`1.0.0.721`, `127.0.0.1/x`, a NUL, a bidi control character).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// An IP address (IPv6 with or without brackets) or a host name (RFC 1123: labels of letters,
/// digits and `-`, 1 to 63 characters, not starting or ending with `-`, 253 at most in all).
/// Names are not resolved here: a partner's name may only resolve once the truck is at its
/// stop.
pub fn check_host(host: &str) -> Result<(), String> {
    let shown = host.escape_debug();
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "`{shown}` is neither an IP address nor a host name (character {:?} not allowed)",
            c
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name
        .split('.')
        .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("`{shown}` is not a valid IP address"));
    }
    if name.len() > 253 {
        return Err(format!("`{shown}` is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "`{shown}` is not a host name (each dot-separated part: 1 to 63 letters, \
                 digits or `-`, not starting or ending with `-`)"
            ));
        }
    }
    Ok(())
}

/// The addresses a listener on `host` would bind; a name must resolve now, since the server
/// binds it at start.
pub fn listen_addrs(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    check_host(host)?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addrs: Vec<SocketAddr> = (bare, port)
        .to_socket_addrs()
        .map_err(|e| format!("`{host}` does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("`{host}` resolves to no address"));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_pass() {
        for ok in [
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "[::1]",
            "localhost",
            "broker.truck.lan",
            "plc-1",
            "host.",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn what_no_socket_would_take_is_refused() {
        for bad in [
            "",
            "1.0.0.721",
            "256.1.1.1",
            "127.0.0.1/x",
            "a\0b",
            "lens\u{202e}",
            "bad name",
            "-plc",
            "a..b",
            "http://x",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
        assert!(check_host("1.0.0.721").unwrap_err().contains("IP address"));
    }

    #[test]
    fn a_listen_host_must_resolve() {
        assert!(listen_addrs("127.0.0.1", 0).is_ok());
        assert!(listen_addrs("localhost", 0).is_ok());
        assert!(listen_addrs("no-such-host.invalid", 0).is_err());
    }
}
