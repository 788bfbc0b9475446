//! The way back: writes and method calls from clients to the adapter that owns the target.

use std::sync::Arc;
use std::time::Duration;

use fabrique_adapters::tag::{AdapterId, TagEntry};
use fabrique_adapters::{
    CallError, CallRequest, Command, TagCatalog, TagId, Value, WriteError, WriteRequest,
};
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

/// Routes commands to adapters; cheap to clone, every clone sees a reload.
#[derive(Clone)]
pub struct CommandRouter {
    routes: Arc<RwLock<Routes>>,
    timeout: Duration,
}

struct Routes {
    /// Index: `AdapterId`. Append-only, like adapter ids: a stopped adapter's sender stays,
    /// closed, and its tags are retired from the catalogue, so nothing is routed to it.
    adapters: Vec<mpsc::Sender<Command>>,
    catalog: Arc<TagCatalog>,
}

impl CommandRouter {
    pub fn new(
        adapters: Vec<mpsc::Sender<Command>>,
        catalog: Arc<TagCatalog>,
        timeout: Duration,
    ) -> Self {
        CommandRouter {
            routes: Arc::new(RwLock::new(Routes { adapters, catalog })),
            timeout,
        }
    }

    /// How many adapters have been routed to so far: the next adapter id.
    pub fn adapters(&self) -> usize {
        self.routes.read().adapters.len()
    }

    /// After a reload: route to the adapters started since (ids following the existing ones),
    /// with the grown catalogue.
    pub fn extend(&self, catalog: Arc<TagCatalog>, adapters: Vec<mpsc::Sender<Command>>) {
        let mut routes = self.routes.write();
        routes.adapters.extend(adapters);
        routes.catalog = catalog;
    }

    fn entry(&self, tag: TagId) -> Option<TagEntry> {
        self.routes.read().catalog.get(tag).cloned()
    }

    /// Write `value` to `tag` and wait until its device accepts or refuses it.
    pub async fn write(&self, tag: TagId, value: Value) -> Result<(), WriteError> {
        let entry = self.entry(tag).ok_or(WriteError::NotWritable)?;
        if !entry.spec.data_type.accepts(&value) {
            return Err(WriteError::TypeMismatch(entry.spec.data_type));
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Write(WriteRequest { tag, value, reply });
        self.send(entry.owner, command, answer)
            .await
            .unwrap_or(Err(WriteError::Timeout))
    }

    /// Call `method` on the adapter that owns `anchor` (a tag next to the method, such as
    /// `Line/State` for `Line/SubmitOrder`).
    pub async fn call(
        &self,
        anchor: TagId,
        method: String,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, CallError> {
        let entry = self
            .entry(anchor)
            .ok_or_else(|| CallError::UnknownMethod(method.clone()))?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Call(CallRequest {
            method,
            args,
            reply,
        });
        self.send(entry.owner, command, answer)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// Call the declared method at `method` (`<object>/<name>`) on the adapter that declared
    /// it ([`fabrique_adapters::TagRegistrar::method`]).
    pub async fn call_method(
        &self,
        method: String,
        args: Vec<Value>,
    ) -> Result<Vec<Value>, CallError> {
        let owner = self.routes.read().catalog.method(&method).map(|(o, _)| o);
        let owner = owner.ok_or_else(|| CallError::UnknownMethod(method.clone()))?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Call(CallRequest {
            method,
            args,
            reply,
        });
        self.send(owner, command, answer)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    /// Deliver a command and wait for its answer; `None` when the adapter is gone, full for
    /// the whole timeout, or silent.
    async fn send<T>(
        &self,
        owner: AdapterId,
        command: Command,
        answer: oneshot::Receiver<T>,
    ) -> Option<T> {
        let adapter = self
            .routes
            .read()
            .adapters
            .get(usize::from(owner.0))?
            .clone();
        let exchange = async {
            adapter.send(command).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .ok()
            .flatten()
    }
}
