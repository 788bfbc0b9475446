//! File descriptors: the soft limit raised to the hard one at start, and a share of them kept
//! away from HTTP so that a crowd of connections on the LAN cannot starve the OPC UA server,
//! the sinks and the stores (an SQLite database, a spool segment and a broker connection all
//! need a descriptor at the moment they open one).
//!
//! The reservation is a budget, not held descriptors: HTTP's global connection cap
//! (`http.max_connections`) is lowered at start to `soft limit - reserved`, where `reserved`
//! counts [`BASE`] for the process itself (stores, spool segments, logs, PKI files, the runtime),
//! one per allowed OPC UA session plus [`OPCUA_SPARE`] connections that are not sessions yet,
//! and [`PER_PEER`] per device and per sink.

use crate::config::GatewayConfig;

/// The process itself: SQLite databases and their journals, spool segments, PKI files, the
/// runtime's own descriptors, listeners.
pub const BASE: u64 = 64;
/// OPC UA connections that have not (yet) made a session: discovery, refused logins.
pub const OPCUA_SPARE: u64 = 16;
/// A device or a sink: its connection and a reconnect overlapping the old one.
pub const PER_PEER: u64 = 2;

/// The descriptor limit after [`raise_soft_limit`] and what it leaves to HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub soft: u64,
    pub hard: u64,
    pub reserved: u64,
}

impl Budget {
    /// Connections HTTP may hold without eating into the reservation (at least 1).
    pub fn http_connections(&self) -> usize {
        usize::try_from(self.soft.saturating_sub(self.reserved).max(1)).unwrap_or(usize::MAX)
    }
}

/// Descriptors kept for everything but HTTP.
pub fn reserved(config: &GatewayConfig) -> u64 {
    let sessions = config.opcua.limits.max_sessions as u64;
    let sinks = u64::from(config.mqtt.enabled) + u64::from(config.influxdb.enabled);
    let peers = config.effective_devices().len() as u64 + sinks;
    BASE + sessions + OPCUA_SPARE + PER_PEER * peers
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (systemd's default soft limit is 1024, far
/// below what the hard limit allows); returns the limits in force afterwards.
#[cfg(unix)]
pub fn raise_soft_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(%error, soft = limit.rlim_cur, hard = limit.rlim_max, "cannot raise the descriptor limit");
        }
    }
    // rlim_t is u64 on Linux, not on every unix.
    #[allow(clippy::unnecessary_cast)]
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

#[cfg(not(unix))]
pub fn raise_soft_limit() -> std::io::Result<(u64, u64)> {
    Ok((u64::MAX, u64::MAX))
}

/// Raise the limit and work out the budget; logged once at start.
pub fn at_start(config: &GatewayConfig) -> Option<Budget> {
    match raise_soft_limit() {
        Ok((soft, hard)) => {
            let budget = Budget {
                soft,
                hard,
                reserved: reserved(config),
            };
            tracing::info!(
                soft,
                hard,
                reserved = budget.reserved,
                http_connections = budget.http_connections(),
                "file descriptor limit"
            );
            Some(budget)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the descriptor limit");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_gets_what_the_reservation_leaves() {
        let config = GatewayConfig::load_with_env(None, Vec::new()).unwrap();
        let reserved = reserved(&config);
        assert!(
            reserved >= BASE + config.opcua.limits.max_sessions as u64,
            "{reserved}"
        );
        let budget = Budget {
            soft: reserved + 100,
            hard: reserved + 100,
            reserved,
        };
        assert_eq!(budget.http_connections(), 100);
        let tight = Budget {
            soft: 10,
            hard: 10,
            reserved,
        };
        assert_eq!(tight.http_connections(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_is_raised() {
        let (soft, hard) = raise_soft_limit().unwrap();
        // Equal unless the kernel caps the soft limit below an unlimited hard one (a warning).
        assert!(soft <= hard && soft >= 1024.min(hard), "{soft} {hard}");
    }
}
