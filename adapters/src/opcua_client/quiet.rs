//! Keeps the OPC UA library's own logs out of the gateway's log while it works for us.
//!
//! async-opcua logs at ERROR on every connection attempt to a partner that is away ("Could not
//! connect to host", "Failed to read own certificate" because security None needs none), and
//! this adapter retries for as long as the partner is away. The adapter reports every failure
//! itself (the device's LastError, one warning per outage), so the library's events at INFO
//! and above are dropped for the futures run under [`Quiet`]; DEBUG and TRACE still pass, for
//! `RUST_LOG=opcua_client=debug` when a connection needs a closer look.

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};

/// Forwards everything to the gateway's subscriber, except the library's chatter.
pub struct Quiet {
    inner: Dispatch,
}

impl Quiet {
    /// Wraps the subscriber in effect now.
    pub fn dispatch() -> Dispatch {
        let inner = tracing::dispatcher::get_default(Dispatch::clone);
        Dispatch::new(Quiet { inner })
    }

    fn dropped(metadata: &Metadata<'_>) -> bool {
        Self::dropped_at(metadata.target(), *metadata.level())
    }

    /// Levels compare by verbosity: ERROR < WARN < INFO < DEBUG.
    fn dropped_at(target: &str, level: Level) -> bool {
        target.starts_with("opcua_") && level <= Level::INFO
    }
}

impl Subscriber for Quiet {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Decided per event: the same callsite may fire outside a quiet future too.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        !Self::dropped(metadata) && self.inner.enabled(metadata)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        if !Self::dropped(event.metadata()) {
            self.inner.event(event)
        }
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }

    fn current_span(&self) -> tracing_core::span::Current {
        self.inner.current_span()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_library_above_debug_is_dropped() {
        assert!(Quiet::dropped_at(
            "opcua_client::transport::tcp",
            Level::ERROR
        ));
        assert!(Quiet::dropped_at(
            "opcua_core::comms::secure_channel",
            Level::INFO
        ));
        assert!(!Quiet::dropped_at("opcua_client::session", Level::DEBUG));
        assert!(!Quiet::dropped_at(
            "fabrique_adapters::adapter",
            Level::WARN
        ));
    }
}
