//! One truck, one id: two gateways started with the same `site.id` on one broker would mix
//! their data (and knock each other off the broker, sharing a client id). The retained
//! presence topic `<prefix>/<site>/presence` says which gateway instance holds the id:
//!
//! - at start (with `[mqtt] enabled`), before any sink runs, the gateway connects with a client
//!   id of its own instance, reads the retained presence and refuses to start when another
//!   instance says it is online;
//! - otherwise it publishes `{"online": true, "instance": …}` retained, with
//!   `{"online": false, …}` as its last will (a killed gateway frees the id at once), and keeps
//!   the connection for as long as it runs; a clean stop publishes offline;
//! - a gateway that later sees another instance claim its id (a broker that was away at its
//!   start) logs it as an error.

use std::time::Duration;

use fabrique_adapters::mqtt::{Connection, Session};
use rumqttc::{Event, Incoming, LastWill, Outgoing, QoS};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::mqtt::MqttSinkConfig;

/// How long the start waits for the broker before going on without the check.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// After the SUBACK, how long a retained presence may take to arrive.
const RETAINED_WAIT: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
#[error("site.id `{site}` is already online on the broker {broker} (gateway instance {other}, since {since}); two gateways with one id would mix their data: give this one another site.id")]
pub struct Duplicate {
    pub site: String,
    pub broker: String,
    pub other: String,
    pub since: String,
}

pub struct Presence {
    connection: Connection,
    topic: String,
    instance: String,
    site: String,
    broker: String,
}

fn payload(instance: &str, online: bool) -> Vec<u8> {
    json!({
        "online": online,
        "instance": instance,
        "since": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
    .to_string()
    .into_bytes()
}

/// `Some((instance, since))` of a retained presence that says online.
fn online_holder(bytes: &[u8]) -> Option<(String, String)> {
    let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if doc.get("online")?.as_bool()? {
        let instance = doc.get("instance")?.as_str()?.to_owned();
        let since = doc
            .get("since")
            .and_then(|s| s.as_str())
            .unwrap_or("?")
            .to_owned();
        return Some((instance, since));
    }
    None
}

impl Presence {
    /// Checks the id at the broker of `[mqtt]`, then claims it. `Err` when another gateway
    /// holds it; a broker that does not answer in time leaves the check to the running task.
    pub async fn claim(config: &MqttSinkConfig, site: &str) -> Result<Presence, Duplicate> {
        let instance = format!("{:016x}", rand::random::<u64>());
        let topic = format!("{}/{site}/presence", config.prefix);
        let client_id = format!("{}-presence-{}", config.client_id(site), &instance[..8]);
        let options = config.endpoint(client_id).options(&Session {
            last_will: Some(LastWill::new(
                &topic,
                payload(&instance, false),
                QoS::AtLeastOnce,
                true,
            )),
            ..Session::default()
        });
        let options = match options {
            Ok(options) => options,
            Err(error) => {
                // The publisher says the same and does not start: nothing to protect.
                tracing::warn!(%error, "presence not checked");
                let options = rumqttc::MqttOptions::new("unused", "127.0.0.1", 1);
                return Ok(Presence {
                    connection: Connection::new(options, 16),
                    topic,
                    instance,
                    site: site.to_owned(),
                    broker: String::new(),
                });
            }
        };
        let mut presence = Presence {
            connection: Connection::new(options, 16),
            topic,
            instance,
            site: site.to_owned(),
            broker: config.broker.clone(),
        };
        let checked = tokio::time::timeout(CONNECT_WAIT, presence.check()).await;
        match checked {
            Ok(Err(duplicate)) => {
                // A clean DISCONNECT: the broker must not publish this instance's last will,
                // which would overwrite the holder's presence.
                presence.disconnect().await;
                return Err(duplicate);
            }
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!(broker = %presence.broker, "presence: broker not reached at start; the id is checked once it is")
            }
        }
        Ok(presence)
    }

    /// Connect, read the retained presence, publish ours.
    async fn check(&mut self) -> Result<(), Duplicate> {
        loop {
            match self.connection.next().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = self
                        .connection
                        .client()
                        .try_subscribe(&self.topic, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => break,
                Ok(_) => {}
                Err(_) => {}
            }
        }
        // The retained message follows the SUBACK.
        tokio::time::timeout(RETAINED_WAIT, async {
            loop {
                match self.connection.next().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == self.topic => {
                        return self.seen(&p.payload);
                    }
                    Ok(_) | Err(_) => {}
                }
            }
        })
        .await
        .unwrap_or(Ok(()))?;
        self.announce();
        Ok(())
    }

    fn seen(&self, bytes: &[u8]) -> Result<(), Duplicate> {
        match online_holder(bytes) {
            Some((other, since)) if other != self.instance => Err(Duplicate {
                site: self.site.clone(),
                broker: self.broker.clone(),
                other,
                since,
            }),
            _ => Ok(()),
        }
    }

    fn announce(&self) {
        let _ = self.connection.client().try_publish(
            &self.topic,
            QoS::AtLeastOnce,
            true,
            payload(&self.instance, true),
        );
    }

    /// Holds the id until `shutdown`: reconnects, announces again, reports a claim by another
    /// instance; at the end, says offline.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.broker.is_empty() {
            return;
        }
        let mut reported = false;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.connection.next() => event,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = self
                        .connection
                        .client()
                        .try_subscribe(&self.topic, QoS::AtLeastOnce);
                    self.announce();
                }
                Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == self.topic => {
                    if let Err(duplicate) = self.seen(&p.payload) {
                        if !reported {
                            tracing::error!("{duplicate}");
                            reported = true;
                        }
                    }
                }
                _ => {}
            }
        }
        if self.connection.is_connected() {
            let _ = self.connection.client().try_publish(
                &self.topic,
                QoS::AtLeastOnce,
                true,
                payload(&self.instance, false),
            );
            self.disconnect().await;
        }
    }

    async fn disconnect(&mut self) {
        let _ = self.connection.client().try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match self.connection.next().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_online_presence_holds_the_id() {
        let online = payload("abc", true);
        assert_eq!(
            online_holder(&online).map(|(i, _)| i).as_deref(),
            Some("abc")
        );
        assert_eq!(online_holder(&payload("abc", false)), None);
        assert_eq!(online_holder(b"not json"), None);
    }
}
