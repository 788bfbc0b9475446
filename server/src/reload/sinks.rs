//! The sinks the gateway runs, each with its own stop token, so a reload can restart one with
//! its new section while the others (and the OPC UA sessions) carry on.
//!
//! A restarted sink keeps what makes it the same sink: its counters (the diagnostics tags,
//! `/health`, `/metrics`) and its disk buffer. The old one is stopped first and awaited, which
//! closes its buffer (synced) before the new one opens the same folder and sends what it holds.
//! `[mqtt]` also configures the presence claim and the survey and order subscriber: they are
//! restarted with the MQTT sink.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fabrique_adapters::{PointBus, TagId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::CommandRouter;
use crate::config::GatewayConfig;
use crate::streams::presence::Presence;
use crate::streams::sink::{SinkContext, SinkKind};
use crate::streams::SinkCounters;
use crate::visits::{MqttInbound, VisitsHandle};

/// How long a stopping sink gets to flush and close its buffer before it is aborted (which
/// still closes the buffer's files; what was only in memory is then lost, as on a crash).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What every sink is started with, whatever its section says.
pub struct SinkBase {
    pub bus: PointBus,
    pub site: String,
    pub router: CommandRouter,
    /// `<storage.data_dir>`: buffers go to `buffer/<sink>/` under it.
    pub data_dir: PathBuf,
    /// The survey and order subscriber's way to the visits writer.
    pub visits: VisitsHandle,
    /// `Line/State`, the order subscriber's anchor.
    pub line_state: Option<TagId>,
    /// Parent of every sink's stop token.
    pub shutdown: CancellationToken,
    /// The conditions' state changes, for sinks that carry alarms (alarms/north.rs).
    pub alarms: std::sync::Arc<crate::alarms::Alarms>,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn spawn<F>(parent: &CancellationToken, run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = parent.child_token();
        let task = tokio::spawn(run(stop.clone()));
        Running { stop, task }
    }

    async fn stop(self, what: &str) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!(what, "did not stop within 5 s; aborted");
            task.abort();
            let _ = task.await;
        }
    }
}

struct Sink {
    kind: &'static SinkKind,
    counters: Arc<SinkCounters>,
    running: Option<Running>,
}

/// The running sinks, and the MQTT presence and subscriber that share `[mqtt]`.
pub struct SinkSet {
    base: SinkBase,
    sinks: Vec<Sink>,
    presence: Option<Running>,
    inbound: Option<Running>,
}

impl SinkSet {
    /// Start the sinks `config` enables (with the counters their diagnostics tags read): the
    /// presence claim first (a duplicate site id stops the start), then the sinks, then the
    /// subscriber.
    pub async fn start(
        config: &GatewayConfig,
        base: SinkBase,
        enabled: Vec<(&'static SinkKind, Arc<SinkCounters>)>,
    ) -> anyhow::Result<SinkSet> {
        let mut set = SinkSet {
            base,
            sinks: enabled
                .into_iter()
                .map(|(kind, counters)| Sink {
                    kind,
                    counters,
                    running: None,
                })
                .collect(),
            presence: None,
            inbound: None,
        };
        // A fleet shares its broker: refuse an id that another running gateway holds, before
        // any sink publishes (streams/presence.rs).
        if config.mqtt.enabled {
            let presence = Presence::claim(&config.mqtt, &config.site.id).await?;
            set.presence = Some(Running::spawn(&set.base.shutdown, |stop| {
                presence.run(stop)
            }));
        }
        let stop_town = set.base.visits.current_stop().town;
        for i in 0..set.sinks.len() {
            let running = set.spawn_sink(config, i, &stop_town)?;
            set.sinks[i].running = Some(running);
        }
        set.start_inbound(config);
        Ok(set)
    }

    fn spawn_sink(
        &self,
        config: &GatewayConfig,
        index: usize,
        stop_town: &str,
    ) -> anyhow::Result<Running> {
        let sink = &self.sinks[index];
        let stop = self.base.shutdown.child_token();
        let ctx = SinkContext {
            bus: self.base.bus.clone(),
            site: self.base.site.clone(),
            stop: stop_town.to_owned(),
            router: self.base.router.clone(),
            counters: sink.counters.clone(),
            buffer_dir: self.base.data_dir.join("buffer").join(sink.kind.buffer),
            spool_fsync: Duration::from_millis(config.streams.spool_fsync_ms),
            shutdown: stop.clone(),
            alarms: self.base.alarms.clone(),
        };
        let built =
            (sink.kind.build)(config, &ctx).with_context(|| format!("sink {}", sink.kind.name))?;
        let task = tokio::spawn(built.run(ctx));
        Ok(Running { stop, task })
    }

    // Survey responses and orders arrive on the broker of `[mqtt]` (visits/mqtt_inbound.rs).
    fn start_inbound(&mut self, config: &GatewayConfig) {
        if config.mqtt.enabled && config.visits.mqtt_subscribe {
            let inbound = MqttInbound::new(
                config.mqtt.clone(),
                &config.site.id,
                self.base.visits.clone(),
                self.base.router.clone(),
                self.base.line_state,
            );
            self.inbound = Some(Running::spawn(&self.base.shutdown, |stop| {
                inbound.run(stop)
            }));
        }
    }

    /// Restart `kinds` with their sections in `config` (`old` if one cannot be built with its
    /// new section, so the sink keeps running). Their names, as restarted.
    pub async fn restart(
        &mut self,
        kinds: &[&'static SinkKind],
        old: &GatewayConfig,
        config: &GatewayConfig,
    ) -> Vec<String> {
        let stop_town = self.base.visits.current_stop().town;
        let mut restarted = Vec::new();
        for kind in kinds {
            let Some(index) = self.sinks.iter().position(|s| s.kind.name == kind.name) else {
                continue;
            };
            let mqtt = kind.buffer == "mqtt";
            if mqtt {
                if let Some(inbound) = self.inbound.take() {
                    inbound.stop("mqtt subscriber").await;
                }
            }
            if let Some(running) = self.sinks[index].running.take() {
                running.stop(kind.name).await;
            }
            if mqtt {
                if let Some(presence) = self.presence.take() {
                    presence.stop("mqtt presence").await;
                }
            }
            let (running, used) = match self.spawn_sink(config, index, &stop_town) {
                Ok(running) => {
                    restarted.push(kind.name.to_owned());
                    (running, config)
                }
                Err(error) => {
                    tracing::error!(
                        sink = kind.name,
                        error = format!("{error:#}"),
                        "cannot start the sink with its new section; it runs with the old one"
                    );
                    match self.spawn_sink(old, index, &stop_town) {
                        Ok(running) => (running, old),
                        Err(error) => {
                            tracing::error!(
                                sink = kind.name,
                                error = format!("{error:#}"),
                                "cannot start the sink again; restart the gateway"
                            );
                            continue;
                        }
                    }
                }
            };
            self.sinks[index].running = Some(running);
            if mqtt {
                // On reload a duplicate id is reported, not fatal: the other sinks run.
                match Presence::claim(&used.mqtt, &used.site.id).await {
                    Ok(presence) => {
                        self.presence = Some(Running::spawn(&self.base.shutdown, |stop| {
                            presence.run(stop)
                        }))
                    }
                    Err(duplicate) => tracing::error!("{duplicate}"),
                }
                self.start_inbound(used);
            }
        }
        restarted
    }

    /// Wait for every sink to finish (after the gateway's shutdown): they flush and close
    /// their buffers.
    pub async fn join_all(&mut self) {
        let running = self
            .sinks
            .iter_mut()
            .filter_map(|s| s.running.take().map(|r| (s.kind.name, r)))
            .chain(self.inbound.take().map(|r| ("mqtt subscriber", r)))
            .chain(self.presence.take().map(|r| ("mqtt presence", r)))
            .collect::<Vec<_>>();
        for (what, running) in running {
            running.stop(what).await;
        }
    }
}
