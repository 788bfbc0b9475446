//! The way back: writes and method calls from clients to the adapter that owns the target.

use std::sync::Arc;
use std::time::Duration;

use fabrique_adapters::tag::AdapterId;
use fabrique_adapters::{
    CallError, CallRequest, Command, TagCatalog, TagId, Value, WriteError, WriteRequest,
};
use tokio::sync::{mpsc, oneshot};

/// Routes commands to adapters; cheap to clone.
#[derive(Clone)]
pub struct CommandRouter {
    adapters: Arc<[mpsc::Sender<Command>]>,
    catalog: Arc<TagCatalog>,
    timeout: Duration,
}

impl CommandRouter {
    pub fn new(
        adapters: Vec<mpsc::Sender<Command>>,
        catalog: Arc<TagCatalog>,
        timeout: Duration,
    ) -> Self {
        CommandRouter {
            adapters: adapters.into(),
            catalog,
            timeout,
        }
    }

    /// Write `value` to `tag` and wait until its device accepts or refuses it.
    pub async fn write(&self, tag: TagId, value: Value) -> Result<(), WriteError> {
        let entry = self.catalog.get(tag).ok_or(WriteError::NotWritable)?;
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
            .catalog
            .get(anchor)
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

    /// Deliver a command and wait for its answer; `None` when the adapter is gone, full for
    /// the whole timeout, or silent.
    async fn send<T>(
        &self,
        owner: AdapterId,
        command: Command,
        answer: oneshot::Receiver<T>,
    ) -> Option<T> {
        let adapter = self.adapters.get(usize::from(owner.0))?;
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
