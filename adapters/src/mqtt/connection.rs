//! The one MQTT connection layer of the gateway: how a broker is reached (address, client id,
//! keep-alive, login, TLS) and how its event loop is driven (polling, reconnection delays).
//!
//! Used by the MQTT device adapter (this crate), and by the gateway's MQTT publisher, its
//! survey and orders subscriber and its Sparkplug B edge node (`fabrique-gateway`): every
//! MQTT client of the process connects, logs in, backs off and polls the same way.
//!
//! The event loop is polled through a future that owns it and is never dropped half-way:
//! cancelling a poll in the middle of a write could lose or corrupt an outgoing packet. So
//! [`Connection::next`] may be used in a `select!` freely: a cancelled call leaves the poll
//! in place and the next call resumes it.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions,
    TlsConfiguration, Transport,
};

use super::config::parse_broker;
use crate::backoff::Backoff;

/// How to reach and log in to a broker: a view on the keys every MQTT section shares
/// (`broker`, `client_id`, `keep_alive_s`, `username`, `password_env`, `ca_file`).
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    /// Where the keys sit, for error messages: `mqtt`, `sparkplug`, `devices[Printer]`.
    pub section: &'a str,
    /// `host:port`, `host` or `[v6]:port`.
    pub broker: &'a str,
    pub client_id: String,
    pub keep_alive_s: u64,
    pub username: Option<&'a str>,
    /// Name of the environment variable holding the password (never in a file, never logged).
    pub password_env: Option<&'a str>,
    /// PEM file of the CA that signed the broker's certificate: connect with TLS.
    pub ca_file: Option<&'a Path>,
}

/// What differs from one client to the next: the session and its limits.
#[derive(Debug, Clone)]
pub struct Session {
    /// `false`: a persistent session (the broker keeps subscriptions and queued messages).
    pub clean: bool,
    /// Acknowledge incoming QoS 1 messages by hand (`AsyncClient::ack`).
    pub manual_acks: bool,
    /// Largest packet in and out, bytes.
    pub max_packet_bytes: usize,
    /// QoS 1 messages in flight at once (rumqttc's default when `None`).
    pub inflight: Option<u16>,
    pub last_will: Option<LastWill>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            clean: true,
            manual_acks: false,
            max_packet_bytes: super::config::MAX_PACKET_BYTES,
            inflight: None,
            last_will: None,
        }
    }
}

impl Endpoint<'_> {
    /// The rumqttc options: address, client id, keep-alive, login and TLS. Errors name the key.
    pub fn options(&self, session: &Session) -> Result<MqttOptions, String> {
        let section = self.section;
        let (host, port) =
            parse_broker(self.broker).map_err(|reason| format!("{section}.broker: {reason}"))?;
        let mut options = MqttOptions::new(self.client_id.clone(), host, port);
        options
            .set_keep_alive(Duration::from_secs(self.keep_alive_s.max(1)))
            .set_clean_session(session.clean)
            .set_manual_acks(session.manual_acks)
            .set_max_packet_size(session.max_packet_bytes, session.max_packet_bytes);
        if let Some(inflight) = session.inflight {
            options.set_inflight(inflight);
        }
        if let Some(will) = &session.last_will {
            options.set_last_will(will.clone());
        }
        if let Some(user) = self.username {
            let password = match self.password_env {
                Some(var) => std::env::var(var).map_err(|_| {
                    format!("environment variable `{var}` ({section}.password_env) is not set")
                })?,
                None => String::new(),
            };
            options.set_credentials(user.to_owned(), password);
        }
        if let Some(path) = self.ca_file {
            let ca = std::fs::read(path)
                .map_err(|e| format!("cannot read {section}.ca_file {}: {e}", path.display()))?;
            install_ring_provider();
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            }));
        }
        Ok(options)
    }
}

/// The ring provider of rustls, installed once for the process (it keeps the slow aws-lc build
/// out). An error only means that a provider is installed already, which is what is needed.
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An event loop given back by [`poll_after`], with what its poll produced.
pub type Polled = (EventLoop, Result<Event, ConnectionError>);

/// One poll of the event loop, after `delay`; the future owns the loop and gives it back.
pub fn poll_after(
    mut events: EventLoop,
    delay: Duration,
) -> Pin<Box<dyn Future<Output = Polled> + Send>> {
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = events.poll().await;
        (events, result)
    })
}

/// A client and its event loop, reconnecting with [`Backoff`] delays after every error.
pub struct Connection {
    client: AsyncClient,
    polling: Pin<Box<dyn Future<Output = Polled> + Send>>,
    backoff: Backoff,
    connected: bool,
    /// The last will of the connections after the current one (Sparkplug's NDEATH carries
    /// the number of the connection it ends).
    next_will: Option<LastWill>,
}

impl Connection {
    /// `requests`: capacity of the channel between the client and its event loop.
    pub fn new(options: MqttOptions, requests: usize) -> Self {
        let (client, events) = AsyncClient::new(options, requests);
        Connection {
            client,
            polling: poll_after(events, Duration::ZERO),
            backoff: Backoff::default(),
            connected: false,
            next_will: None,
        }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// From the next connection on, the broker holds `will` as the last will (the current
    /// connection keeps the one it was opened with).
    pub fn set_next_last_will(&mut self, will: LastWill) {
        self.next_will = Some(will);
    }

    /// True from a CONNACK to the next error.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The next event of the connection, or the error that ended it (the next call waits the
    /// reconnection delay, then connects again). Cancel-safe.
    pub async fn next(&mut self) -> Result<Event, ConnectionError> {
        let (mut events, result) = (&mut self.polling).await;
        let delay = match &result {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                // rumqttc turns a refused CONNACK into an error: this one is a success.
                self.connected = true;
                self.backoff.reset();
                Duration::ZERO
            }
            Ok(_) => Duration::ZERO,
            Err(_) => {
                // rumqttc keeps the events its lost connection had queued and returns them
                // after the next CONNACK; an `Outgoing::Publish` of the old connection would
                // then be paired with a message handed on the new one. Every user treats what
                // was in flight as lost (or requeues it itself) when the connection drops.
                events.state.events.clear();
                if let Some(will) = self.next_will.take() {
                    events.mqtt_options.set_last_will(will);
                }
                self.connected = false;
                self.backoff.next_delay()
            }
        };
        self.polling = poll_after(events, delay);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint<'static> {
        Endpoint {
            section: "sparkplug",
            broker: "127.0.0.1:1884",
            client_id: "truck-1".into(),
            keep_alive_s: 10,
            username: None,
            password_env: None,
            ca_file: None,
        }
    }

    #[test]
    fn options_carry_the_endpoint_and_errors_name_the_key() {
        let options = endpoint().options(&Session::default()).unwrap();
        assert_eq!(options.client_id(), "truck-1");
        assert_eq!(options.broker_address(), ("127.0.0.1".to_owned(), 1884));
        let mut bad = endpoint();
        bad.broker = "mqtt://x";
        assert!(bad
            .options(&Session::default())
            .unwrap_err()
            .starts_with("sparkplug.broker"));
        let mut bad = endpoint();
        bad.ca_file = Some(Path::new("/nonexistent/ca.pem"));
        assert!(bad
            .options(&Session::default())
            .unwrap_err()
            .contains("sparkplug.ca_file"));
        let mut bad = endpoint();
        bad.username = Some("u");
        bad.password_env = Some("FABRIQUE_TEST_SURELY_UNSET_VARIABLE");
        assert!(bad
            .options(&Session::default())
            .unwrap_err()
            .contains("sparkplug.password_env"));
    }
}
