//! The conditions' state across a restart: `<storage.data_dir>/alarms.json`, rewritten whole
//! (a temporary file, fsync, rename, fsync of the directory) on a dedicated thread after
//! each change, so a kill -9 leaves the previous file or the new one, never half of one.
//! Changes that come faster than the disk are coalesced: the thread writes the latest state.
//! A method call (Acknowledge, Confirm, AddComment, Enable, Disable) answers only once its
//! change is on disk ([`Alarms::durable`]): what was acknowledged survives kill -9.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Weak};

use fabrique_adapters::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{known_name, AlarmLimits, Alarms, ConditionKind, ConditionState, LimitLevel};

pub const FILE: &str = "alarms.json";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read the alarm state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the alarm state {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot start the alarm state writer: {0}")]
    Thread(std::io::Error),
}

/// One condition as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    name: String,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    level: Option<LimitLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limits: Option<AlarmLimits>,
    enabled: bool,
    active: bool,
    acked: bool,
    confirmed: bool,
    severity: u16,
    message: String,
    comment: String,
    time_ns: i64,
    /// Hex: the EventId a client acknowledges with stays valid across the restart.
    event_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    conditions: Vec<Stored>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Stored {
    fn of(state: &ConditionState) -> Self {
        let (level, limits) = match &state.kind {
            ConditionKind::OffNormal => (None, None),
            ConditionKind::ExclusiveLimit { level, limits } => (*level, Some(limits.clone())),
        };
        Stored {
            name: state.name.to_owned(),
            source: state.source.clone(),
            level,
            limits,
            enabled: state.enabled,
            active: state.active,
            acked: state.acked,
            confirmed: state.confirmed,
            severity: state.severity,
            message: state.message.clone(),
            comment: state.comment.clone(),
            time_ns: state.time.as_nanos(),
            event_id: hex(&state.event_id),
        }
    }

    fn state(self) -> Option<ConditionState> {
        let kind = match self.limits {
            Some(limits) => ConditionKind::ExclusiveLimit {
                level: self.level,
                limits,
            },
            None => ConditionKind::OffNormal,
        };
        Some(ConditionState {
            name: known_name(&self.name)?,
            source: self.source,
            kind,
            enabled: self.enabled,
            active: self.active,
            acked: self.acked,
            confirmed: self.confirmed,
            severity: self.severity,
            message: self.message,
            comment: self.comment,
            time: Timestamp::from_nanos(self.time_ns),
            event_id: unhex(&self.event_id)?,
        })
    }
}

/// Read the conditions saved in `dir` (none when there is no file yet).
pub fn load(dir: &Path) -> Result<Vec<ConditionState>, PersistError> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    let file: StateFile =
        serde_json::from_str(&text).map_err(|source| PersistError::Parse { path, source })?;
    Ok(file
        .conditions
        .into_iter()
        .filter_map(Stored::state)
        .collect())
}

fn write(dir: &Path, states: &[ConditionState]) -> std::io::Result<()> {
    let mut states: Vec<&ConditionState> = states.iter().collect();
    states.sort_by(|a, b| (&a.source, a.name).cmp(&(&b.source, b.name)));
    let file = StateFile {
        conditions: states.into_iter().map(Stored::of).collect(),
    };
    let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(&text)?;
    out.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))?;
    // The rename itself must reach the disk too.
    std::fs::File::open(dir)?.sync_all()
}

/// A request to the writer thread: write the current state, then say so (if asked).
pub(super) struct Request(pub(super) Option<oneshot::Sender<()>>);

/// The writer thread's end of the conditions: `Alarms::publish` sends a `Request` per change.
pub(super) type Writer = mpsc::Sender<Request>;

/// Restore the saved conditions into `alarms` and start the thread that keeps the file
/// current. Call once, before anything changes a condition.
pub fn start(alarms: &Arc<Alarms>, dir: &Path) -> Result<usize, PersistError> {
    let restored = load(dir)?;
    let count = restored.len();
    alarms.restore(restored);
    let (tx, rx) = mpsc::channel::<Request>();
    let weak: Weak<Alarms> = Arc::downgrade(alarms);
    let dir = dir.to_owned();
    std::thread::Builder::new()
        .name("alarm-state".into())
        .spawn(move || writer(weak, dir, rx))
        .map_err(PersistError::Thread)?;
    alarms.set_writer(tx);
    Ok(count)
}

fn writer(alarms: Weak<Alarms>, dir: PathBuf, rx: mpsc::Receiver<Request>) {
    let mut failures = 0u64;
    while let Ok(first) = rx.recv() {
        // Everything queued meanwhile is covered by this one write of the latest state.
        let mut waiting: Vec<oneshot::Sender<()>> = first.0.into_iter().collect();
        waiting.extend(rx.try_iter().filter_map(|r| r.0));
        let Some(alarms) = alarms.upgrade() else {
            break;
        };
        let states = alarms.conditions();
        drop(alarms);
        if let Err(error) = write(&dir, &states) {
            failures += 1;
            // Logged once per failure streak, counted meanwhile.
            if failures == 1 {
                tracing::error!(%error, dir = %dir.display(), "cannot save the alarm state");
            }
        } else if failures > 0 {
            tracing::info!(failures, "alarm state saved again");
            failures = 0;
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fg-alarms-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn acknowledged_state_survives_a_restart() {
        let dir = temp_dir("restart");
        let alarms = Arc::new(Alarms::default());
        assert_eq!(start(&alarms, &dir).unwrap(), 0);
        let d = "Stations/P/press";
        let lost = alarms
            .device_connection(d, false, "refused", Timestamp::from_nanos(1))
            .unwrap();
        let acked = alarms
            .acknowledge(
                d,
                super::super::COMMUNICATION,
                &lost.event_id,
                "seen",
                Timestamp::from_nanos(2),
            )
            .unwrap();
        alarms.durable().await;
        let limits = AlarmLimits::high(1.0, 2.0);
        super::super::limit::evaluate(
            &alarms,
            "Stations/P/press/T",
            &limits,
            1.5,
            Timestamp::from_nanos(3),
        )
        .unwrap();
        alarms.durable().await;

        let again = Arc::new(Alarms::default());
        assert_eq!(start(&again, &dir).unwrap(), 2);
        let mut states = again.conditions();
        states.sort_by(|a, b| a.source.cmp(&b.source));
        assert_eq!(states[0], acked);
        assert_eq!(
            again.limit_level("Stations/P/press/T"),
            Some(LimitLevel::High)
        );
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = temp_dir("damaged");
        std::fs::write(dir.join(FILE), "{ nope").unwrap();
        let error = load(&dir).unwrap_err().to_string();
        assert!(error.contains("alarms.json"), "{error}");
    }
}
