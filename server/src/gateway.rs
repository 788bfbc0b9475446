//! The gateway assembled: the whole data flow, readable from this one file.
//!
//! ```text
//! adapters ──► point bus ─┬─► OPC UA address space (bridge) ─┐
//!    ▲                    └─► sinks (streams::sink::SINKS): MQTT, InfluxDB, Sparkplug B,
//!    │                         each when its section says `enabled`   │
//!    └──── command router ◄────────────────────────────────────┴─ writes and method calls
//!
//! Sinks buffer on disk under `<storage.data_dir>/buffer/<sink>/`; their counters come back
//! onto the bus as `Diagnostics/Sinks/<Sink>/*` tags (diagnostics.rs).
//!
//! HTTP server (`[http]`): the routes of every feature that serves HTTP, on one listener.
//! Visits (`visits`): a producer on the bus (Stop/*, Visits/*), fed by HTTP, MQTT and OPC UA.
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fabrique_adapters::registry::{build_adapters, build_device_adapter, DeviceConfig};
use fabrique_adapters::{
    Adapter, AdapterContext, AdapterId, PointBus, TagCatalog, TagCatalogBuilder, TagRegistrar,
};
use opcua::nodes::NodeSet2Import;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::commands::CommandRouter;
use crate::config::GatewayConfig;
use crate::diagnostics::SinkDiagnostics;
use crate::history::Historian;
use crate::http::{Guards, HttpServer};
use crate::indicators::IndicatorsEngine;
use crate::journey::{Journey, KioskAdapter};
use crate::monitoring::Monitoring;
use crate::opcua::{build_server, Bridge, DeviceNameplate, GatewayNodesBuilder, StaticModel};
use crate::reload::Reloader;
use crate::streams::sink::SinkKind;
use crate::streams::SinkCounters;
use crate::visits::{VisitsAdapter, VisitsHandle};

/// The gateway's own information model, parsed at start.
pub(crate) const TYPES_NODESET: &str = include_str!("../../nodesets/Fabrique.NodeSet2.xml");

/// Commands waiting for one adapter; a full queue makes clients wait, up to the command timeout.
pub(crate) const COMMAND_QUEUE: usize = 64;

/// Adapters with their tags declared: everything that can be checked without running.
pub struct Plan {
    pub adapters: Vec<Box<dyn Adapter>>,
    pub catalog: Arc<TagCatalog>,
    /// The visits producer's handle; its database is opened by `run`, not by `check`.
    pub visits: VisitsHandle,
    /// The enabled sinks (streams/sink.rs), with the counters they share with their
    /// diagnostics tags.
    pub sinks: Vec<(&'static SinkKind, Arc<SinkCounters>)>,
    /// Partner devices' adapters (index in `adapters`, device path): reloadable one by one.
    pub partners: Vec<(usize, String)>,
    /// The visitor's journey (designs, kiosk, follow pages); its database is opened by `run`.
    pub journey: Arc<Journey>,
}

/// Build the adapters of `config` and collect their tags.
pub fn plan(config: &GatewayConfig) -> anyhow::Result<Plan> {
    let devices = config.effective_devices();
    let simulated: Vec<_> = devices
        .iter()
        .filter(|d| matches!(d, DeviceConfig::Simulator(_)))
        .cloned()
        .collect();
    let mut adapters = build_adapters(&config.simulation, &config.line, &simulated);
    let mut partners = Vec::new();
    for device in &devices {
        if let Some(adapter) = build_device_adapter(device) {
            let path = fabrique_adapters::device::device_path(device.station(), device.name());
            partners.push((adapters.len(), path));
            adapters.push(adapter);
        }
    }
    let journey = Journey::new(&config.journey, &config.line, &config.storage)?;
    let (visits_adapter, visits) = VisitsAdapter::new(
        crate::visits::configured_stop(&config.stop),
        journey.catalogue.ids(),
        config.visits.tour.clone(),
    );
    adapters.push(Box::new(visits_adapter));
    adapters.push(Box::new(KioskAdapter::new(journey.clone())));
    if config.indicators.enabled {
        adapters.push(Box::new(IndicatorsEngine::new(
            config.indicators.clone(),
            config.storage.clone(),
            config.stop.town.clone(),
            config.simulation.speed,
        )));
    }
    let sinks = crate::streams::sink::enabled(config);
    if !sinks.is_empty() {
        let counters = sinks.iter().map(|(k, c)| (k.name, c.clone())).collect();
        adapters.push(Box::new(SinkDiagnostics::new(counters)));
    }
    let mut catalog = TagCatalogBuilder::new();
    for (i, adapter) in adapters.iter_mut().enumerate() {
        let owner = AdapterId(u16::try_from(i).context("more than 65535 adapters")?);
        adapter
            .declare_tags(&mut TagRegistrar::new(&mut catalog, owner))
            .with_context(|| format!("adapter `{}`", adapter.name()))?;
    }
    Ok(Plan {
        adapters,
        catalog: Arc::new(catalog.build()),
        visits,
        sinks,
        partners,
        journey,
    })
}

pub(crate) fn static_model(config: &GatewayConfig, journey: &Journey) -> StaticModel {
    StaticModel {
        step_trades: crate::journey::step_trades(&journey.catalogue),
        site_name: config.site.name.clone(),
        line_models: config.line.models.clone(),
        devices: config
            .effective_devices()
            .iter()
            .map(|d| DeviceNameplate {
                path: fabrique_adapters::device::device_path(d.station(), d.name()),
                protocol: d.protocol().to_owned(),
                identification: d.identification().clone(),
            })
            .collect(),
        machines: config
            .effective_devices()
            .iter()
            .map(crate::opcua::standard::MachineDecl::of)
            .collect(),
    }
}

/// Device path (`Stations/<station>/<device>`) → protocol name, for monitoring.
pub(crate) fn device_protocols(config: &GatewayConfig) -> Vec<(String, String)> {
    config
        .effective_devices()
        .iter()
        .map(|d| {
            let path = fabrique_adapters::device::device_path(d.station(), d.name());
            (path, d.protocol().to_owned())
        })
        .collect()
}

/// Run the gateway until Ctrl-C or SIGTERM; SIGHUP reloads `config_path` (see reload.rs).
pub async fn run(config: GatewayConfig, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let started = Instant::now();
    let Plan {
        adapters,
        catalog,
        visits,
        sinks,
        partners,
        journey,
    } = plan(&config)?;
    let bus = PointBus::new(catalog.clone(), config.bus.ring_batches(catalog.len()));

    let (senders, receivers): (Vec<_>, Vec<_>) = adapters
        .iter()
        .map(|_| mpsc::channel(COMMAND_QUEUE))
        .unzip();
    let router = CommandRouter::new(
        senders,
        catalog.clone(),
        Duration::from_millis(config.opcua.command_timeout_ms),
    );

    let orders_router = router.clone();
    // The historian opens before the server: its variables are marked historized as built.
    let history = if config.history.enabled {
        let data_dir = config.storage.ensure_dir()?;
        Some(Historian::open(&config.history, data_dir, bus.clone()).context("historian")?)
    } else {
        None
    };
    let types = NodeSet2Import::new_str("en", TYPES_NODESET, Vec::new())
        .context("cannot parse nodesets/Fabrique.NodeSet2.xml")?;
    let opcua = build_server(
        &config.opcua,
        GatewayNodesBuilder {
            types: Box::new(types),
            model: static_model(&config, &journey),
            bus: bus.clone(),
            router: router.clone(),
            history: history.clone(),
            tag_node_manager: config.opcua.tag_node_manager,
        },
    )?;

    let data_dir = config.storage.ensure_dir()?;
    tracing::debug!(data_dir = %data_dir.display(), "data directory ready");
    // The current stop it settles is what the sinks start with (reload/sinks.rs).
    visits
        .open(
            &config.storage,
            &crate::visits::configured_stop(&config.stop),
        )
        .context("visits database")?;
    journey.open().context("designs database")?;
    journey.start(bus.clone(), router.clone());

    let budget = crate::fd_budget::at_start(&config);
    let http = if config.http.enabled {
        let mut http = HttpServer::bind(&config.http).await?;
        if let Some(budget) = budget {
            http.cap_connections(budget.http_connections());
        }
        Some(http)
    } else {
        None
    };

    let shutdown = CancellationToken::new();
    let reloader = Arc::new(
        Reloader::new(
            config_path,
            config.clone(),
            bus.clone(),
            router.clone(),
            opcua.nodes.clone(),
            opcua.handle.clone(),
            shutdown.clone(),
        )
        .with_parts(opcua.users.clone(), visits.clone()),
    );
    let mut tasks = JoinSet::new();
    for (i, (adapter, commands)) in adapters.into_iter().zip(receivers).enumerate() {
        // A partner device gets its own stop token and task handle: a reload may stop it.
        let partner = partners.iter().find(|(index, _)| *index == i);
        let stop = match partner {
            Some(_) => reloader.device_token(),
            None => shutdown.clone(),
        };
        let context = AdapterContext {
            publisher: bus.publisher(),
            commands,
            shutdown: stop.clone(),
        };
        match partner {
            Some((_, path)) => {
                let owner = AdapterId(u16::try_from(i).context("more than 65535 adapters")?);
                let task = tokio::spawn(adapter.run(context));
                reloader.started(path.clone(), owner, stop, task).await;
            }
            None => {
                tasks.spawn(adapter.run(context));
            }
        }
    }
    tasks.spawn(crate::reload::on_sighup(reloader.clone(), shutdown.clone()));
    let bridge = Bridge {
        bus: bus.clone(),
        tag_nodes: opcua.nodes.inner().tag_nodes(),
        subscriptions: opcua.handle.subscriptions().clone(),
    };
    tasks.spawn(bridge.run(shutdown.clone()));
    if let Some(ns) = opcua
        .handle
        .get_namespace_index(crate::opcua::INSTANCES_NAMESPACE)
    {
        let emitter = crate::opcua::events::EventEmitter {
            bus: bus.clone(),
            subscriptions: opcua.handle.subscriptions().clone(),
            namespaces: opcua.handle.type_tree().read().namespaces().clone(),
            ns,
            watched: opcua.nodes.inner().watched(),
            alarms: opcua.nodes.inner().alarms(),
            history: history.as_ref().and_then(|h| h.events.clone()),
        };
        tasks.spawn(emitter.run(shutdown.clone()));
        // Every condition change, as an event (subscribed before anything can change).
        let alarms = opcua.nodes.inner().alarms();
        tasks.spawn(crate::opcua::events::report_conditions(
            alarms.subscribe(),
            opcua.handle.subscriptions().clone(),
            opcua.nodes.inner().watched(),
            ns,
            shutdown.clone(),
        ));
        let restored = crate::alarms::persist::start(&alarms, data_dir).context("alarm state")?;
        tracing::debug!(restored, "alarm state restored");
        let limits = crate::alarms::limit::LimitWatch {
            bus: bus.clone(),
            alarms,
        };
        tasks.spawn(limits.run(shutdown.clone()));
    }
    if let Some(history) = &history {
        let consumer = history.start(shutdown.clone());
        tasks.spawn(async move {
            let _ = consumer.await;
        });
    }
    tasks.spawn(crate::opcua::standard::live::run(
        opcua.nodes.inner().derived(),
        bus.clone(),
        opcua.nodes.address_space().clone(),
        opcua.handle.subscriptions().clone(),
        shutdown.clone(),
    ));
    // The sinks, the MQTT presence claim and the survey subscriber, restartable by a reload
    // (reload/sinks.rs).
    let sink_set = crate::reload::sinks::SinkSet::start(
        &config,
        crate::reload::sinks::SinkBase {
            bus: bus.clone(),
            site: config.site.id.clone(),
            router: router.clone(),
            data_dir: data_dir.to_path_buf(),
            visits: visits.clone(),
            line_state: catalog.lookup("Line/State"),
            shutdown: shutdown.clone(),
            alarms: opcua.nodes.inner().alarms(),
        },
        sinks,
    )
    .await?;
    reloader.hold_sinks(sink_set).await;

    if let Some(http) = http {
        tracing::info!(url = %format!("http://{}", http.local_addr()), "HTTP server listening");
        let guards = Guards::new(&config.http)?;
        let monitoring = Monitoring::new(
            bus.clone(),
            opcua.handle.clone(),
            &device_protocols(&config),
            started,
        );
        reloader.watch(monitoring.clone());
        tasks.spawn(monitoring.clone().sample(shutdown.clone()));
        let routes = axum::Router::new()
            .merge(monitoring.routes())
            .merge(crate::indicators::http::routes(
                bus.clone(),
                orders_router.clone(),
                config.storage.clone(),
                &guards,
            ))
            .merge(
                crate::visits::routes(visits.clone(), &config.storage, &guards)
                    .context("visits database")?,
            )
            .merge(crate::reload::routes(reloader.clone(), &guards))
            .merge(crate::journey::routes(journey.clone(), &guards))
            .merge(crate::alarms::http::gateway_routes(
                &opcua,
                history.as_ref().and_then(|h| h.events.clone()),
                &guards,
                &shutdown,
                &mut tasks,
            ));
        tasks.spawn(http.serve(routes, shutdown.clone()));
    }

    let handle = opcua.handle.clone();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stopping");
        handle.cancel();
    });

    tracing::info!(
        endpoint = %config.opcua.endpoint_url(),
        tags = catalog.len(),
        devices = config.effective_devices().len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "gateway ready"
    );
    // Start-up code and data stay resident until the kernel is told they are not needed.
    tokio::spawn(async {
        tokio::time::sleep(crate::startup_pages::AFTER_READY).await;
        match tokio::task::spawn_blocking(crate::startup_pages::release_executable_pages).await {
            Ok(Ok(bytes)) => tracing::debug!(bytes, "start-up pages of the executable released"),
            Ok(Err(error)) => tracing::debug!(%error, "could not release start-up pages"),
            Err(_) => {}
        }
    });
    let served = opcua.server.run().await;
    shutdown.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
        reloader.join_all().await;
    });
    if drained.await.is_err() {
        tracing::warn!("some tasks did not stop within 5 s");
    }
    served.map_err(|e| anyhow::anyhow!("OPC UA server on {}: {e}", config.opcua.endpoint_url()))
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
