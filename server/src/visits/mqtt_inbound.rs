//! What the gateway takes in over MQTT: survey responses and orders, on the broker of `[mqtt]`.
//!
//! - `<prefix>/<site>/survey/responses`: the JSON of `POST /api/survey`.
//! - `<prefix>/<site>/orders/submit`: `{"model": "...", "text": "..."}`, placed on the line
//!   through the command router, like an OPC UA `SubmitOrder`.
//!
//! Its own client (`<client_id>-in`), a persistent session and manual acknowledgements: a
//! QoS 1 response is acknowledged to the broker only once it is stored (or refused), and the
//! broker keeps what arrives while the gateway is away. Acknowledgements leave in the order the
//! messages came, as MQTT requires, while records are stored concurrently (group commit).
//! The price of at-least-once: a response redelivered after a lost connection (sent again by
//! the broker because its acknowledgement never arrived) is stored twice.

use std::collections::HashSet;

use fabrique_adapters::mqtt::{Connection, Session};
use fabrique_adapters::{TagId, Value};
use rumqttc::{AsyncClient, ConnectionError, Event, Incoming, MqttOptions, Publish, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::adapter::{Pending, VisitsHandle};
use super::records::{Rejection, RejectionKind, SurveyResponse, MAX_BODY_BYTES};
use crate::commands::CommandRouter;
use crate::streams::mqtt::MqttSinkConfig;

/// Larger messages are a protocol error (the connection is made again); up to it, a message
/// over [`MAX_BODY_BYTES`] is refused like an oversized HTTP body.
const MAX_PACKET_BYTES: usize = 64 * 1024;

pub struct MqttInbound {
    config: MqttSinkConfig,
    site: String,
    visits: VisitsHandle,
    router: CommandRouter,
    /// A line tag, whose owner serves `Line/SubmitOrder`.
    line_anchor: Option<TagId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderInput {
    model: String,
    text: String,
}

impl MqttInbound {
    pub fn new(
        config: MqttSinkConfig,
        site: &str,
        visits: VisitsHandle,
        router: CommandRouter,
        line_anchor: Option<TagId>,
    ) -> Self {
        MqttInbound {
            config,
            site: site.to_owned(),
            visits,
            router,
            line_anchor,
        }
    }

    pub fn survey_topic(&self) -> String {
        format!("{}/{}/survey/responses", self.config.prefix, self.site)
    }

    pub fn orders_topic(&self) -> String {
        format!("{}/{}/orders/submit", self.config.prefix, self.site)
    }

    fn options(&self) -> Result<MqttOptions, String> {
        let client_id = format!("{}-in", self.config.client_id(&self.site));
        self.config.endpoint(client_id).options(&Session {
            clean: false,
            manual_acks: true,
            max_packet_bytes: MAX_PACKET_BYTES,
            ..Session::default()
        })
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let options = match self.options() {
            Ok(options) => options,
            Err(error) => {
                tracing::error!(%error, "mqtt survey and orders subscriber not started");
                return;
            }
        };
        let survey_topic = self.survey_topic();
        let orders_topic = self.orders_topic();
        tracing::info!(broker = %self.config.broker, survey = %survey_topic, orders = %orders_topic, "mqtt subscriber started");
        let mut connection = Connection::new(options, 1024);
        let client = connection.client().clone();
        let (acks, pending_acks) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acknowledge_in_order(client.clone(), pending_acks));
        let mut connected = false;
        let mut orders_logged = HashSet::new();
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                result = connection.next() => result,
            };
            match result {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    connected = true;
                    tracing::info!(broker = %self.config.broker, "mqtt subscriber connected");
                    for topic in [&survey_topic, &orders_topic] {
                        if let Err(error) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                            tracing::warn!(%topic, %error, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(publish))) => {
                    let done = if publish.topic == survey_topic {
                        self.survey(&publish)
                    } else if publish.topic == orders_topic {
                        self.order(&publish, &mut orders_logged)
                    } else {
                        None
                    };
                    let _ = acks.send((publish, done));
                }
                Ok(_) => {}
                Err(error) => self.lost(&mut connected, &error),
            }
        }
        drop(acks);
        acker.abort();
        let _ = client.try_disconnect();
    }

    fn lost(&self, connected: &mut bool, error: &ConnectionError) {
        if *connected {
            tracing::warn!(broker = %self.config.broker, %error, "mqtt subscriber lost the broker; reconnecting");
        } else {
            tracing::debug!(broker = %self.config.broker, %error, "mqtt subscriber cannot connect");
        }
        *connected = false;
    }

    /// A survey response: refused (counted) or on its way to the database; the returned task
    /// ends once it is stored.
    fn survey(&self, publish: &Publish) -> Option<JoinHandle<()>> {
        let response = if publish.payload.len() > MAX_BODY_BYTES {
            Err(Rejection::new(
                RejectionKind::TooLarge,
                format!(
                    "message of {} bytes is larger than {MAX_BODY_BYTES}",
                    publish.payload.len()
                ),
            ))
        } else {
            SurveyResponse::parse_json_with(&publish.payload, &self.visits.shared.trades)
        };
        match response {
            Err(rejection) => {
                self.visits.shared.rejected("mqtt", true, &rejection);
                None
            }
            Ok(response) => {
                let visits = self.visits.clone();
                Some(tokio::spawn(async move {
                    if let Err(error) = visits.submit(Pending::Survey(response, "mqtt")).await {
                        tracing::error!(%error, "survey response from mqtt not stored");
                    }
                }))
            }
        }
    }

    fn order(
        &self,
        publish: &Publish,
        logged: &mut HashSet<&'static str>,
    ) -> Option<JoinHandle<()>> {
        let mut refuse = |kind: &'static str, reason: String| {
            if logged.insert(kind) {
                tracing::warn!(kind, %reason, "order from mqtt refused (further ones of this kind are not logged)");
            }
        };
        let input: OrderInput = match serde_json::from_slice(&publish.payload) {
            Ok(input) => input,
            Err(error) => {
                refuse("invalid-json", error.to_string());
                return None;
            }
        };
        let Some(anchor) = self.line_anchor else {
            refuse("no-line", "no production line in this configuration".into());
            return None;
        };
        let router = self.router.clone();
        Some(tokio::spawn(async move {
            let args = vec![Value::text(&input.model), Value::text(&input.text)];
            match router.call(anchor, "Line/SubmitOrder".into(), args).await {
                Ok(id) => {
                    tracing::info!(order = ?id.first(), model = %input.model, "order from mqtt placed")
                }
                Err(error) => {
                    tracing::info!(%error, model = %input.model, "order from mqtt refused")
                }
            }
        }))
    }
}

/// Acknowledge each message once its record is stored, in arrival order.
async fn acknowledge_in_order(
    client: AsyncClient,
    mut pending: mpsc::UnboundedReceiver<(Publish, Option<JoinHandle<()>>)>,
) {
    while let Some((publish, done)) = pending.recv().await {
        if let Some(done) = done {
            let _ = done.await;
        }
        if client.ack(&publish).await.is_err() {
            break;
        }
    }
}
