//! Which client address a connection task serves, for the failed-login log.
//!
//! async-opcua 0.19 gives the authenticator no client address. What it does give: the line
//! "Accept new connection from <address> (<n>)" logged by the accept loop just before it
//! spawns the connection's task, and the "Establish TCP channel" span that task opens first.
//! This `tracing` layer pairs them in order, keyed by the tokio task id, which is the task
//! that later runs the login. Pairing by order is exact when connections arrive one after
//! the other (the case of a client retrying a password); when several clients connect in the
//! same instant, tokio may start their tasks in another order and an address can be swapped
//! with another connecting client's. The log says `client_address_by_order` to be honest
//! about it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::LazyLock;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

const ACCEPT_TARGET: &str = "opcua_server::server";
const ACCEPT_PREFIX: &str = "Accept new connection from ";
const CONNECTION_SPAN: &str = "Establish TCP channel";
/// Bounds, so a flood of half-open connections cannot grow memory.
const MAX_PENDING: usize = 256;
const MAX_TASKS: usize = 4096;

#[derive(Default)]
struct Peers {
    /// Accepted, task not started yet.
    pending: VecDeque<SocketAddr>,
    /// Connection task → its client.
    by_task: HashMap<tokio::task::Id, SocketAddr>,
}

static PEERS: LazyLock<Mutex<Peers>> = LazyLock::new(Mutex::default);

/// The client address of the connection the current task serves, if known.
pub fn current_client() -> Option<SocketAddr> {
    let task = tokio::task::try_id()?;
    PEERS.lock().by_task.get(&task).copied()
}

/// The layer to install next to the log formatter (see `main.rs`). It needs the INFO events
/// of `opcua_server::server`, whatever the log level: give it its own filter.
pub struct PeerLayer;

impl PeerLayer {
    pub fn filter() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new()
            .with_target(ACCEPT_TARGET, tracing::Level::INFO)
            .with_target("opcua_server::session", tracing::Level::INFO)
    }
}

/// The connection task, kept in the span so closing it forgets the address.
struct TaskOf(tokio::task::Id);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PeerLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != ACCEPT_TARGET {
            return;
        }
        let mut message = Message(None);
        event.record(&mut message);
        let Some(address) = message
            .0
            .as_deref()
            .and_then(|m| m.strip_prefix(ACCEPT_PREFIX))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
        else {
            return;
        };
        let mut peers = PEERS.lock();
        if peers.pending.len() >= MAX_PENDING {
            peers.pending.pop_front();
        }
        peers.pending.push_back(address);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != CONNECTION_SPAN {
            return;
        }
        let Some(task) = tokio::task::try_id() else {
            return;
        };
        let mut peers = PEERS.lock();
        let Some(address) = peers.pending.pop_front() else {
            return;
        };
        if peers.by_task.len() >= MAX_TASKS {
            peers.by_task.clear();
        }
        peers.by_task.insert(task, address);
        drop(peers);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(TaskOf(task));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let task = span.extensions().get::<TaskOf>().map(|t| t.0);
        if let Some(task) = task {
            PEERS.lock().by_task.remove(&task);
        }
    }
}

struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }
}
