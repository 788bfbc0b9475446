//! Synthetic load: N tags that all change R times a second, for benchmarks.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::adapter::{Adapter, AdapterContext, DeviceStatus, TagRegistrar};
use crate::device::device_path;
use crate::point::{Timestamp, Value};
use crate::tag::{CatalogError, DataType, TagId, TagSpec};

/// `[simulation.synthetic]`: extra tags under `Stations/<station>/<device>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Number of tags (0: no synthetic load).
    pub tags: u32,
    /// Changes per tag per second.
    pub rate_hz: f64,
    pub station: String,
    pub device: String,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            tags: 0,
            rate_hz: 10.0,
            station: "Synthetic".into(),
            device: "Load".into(),
        }
    }
}

impl SyntheticConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.tags > 1_000_000 {
            return Err((
                "simulation.synthetic.tags",
                format!("at most 1000000, got {}", self.tags),
            ));
        }
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0 && self.rate_hz <= 1000.0) {
            return Err((
                "simulation.synthetic.rate_hz",
                format!("must be in (0, 1000], got {}", self.rate_hz),
            ));
        }
        Ok(())
    }

    /// Browse-path name of synthetic tag `i`: `T000042`.
    pub fn tag_name(i: u32) -> String {
        format!("T{i:06}")
    }
}

pub struct SyntheticLoad {
    config: SyntheticConfig,
    tags: Vec<TagId>,
    status: Option<DeviceStatus>,
}

impl SyntheticLoad {
    pub fn new(config: SyntheticConfig) -> Self {
        SyntheticLoad {
            config,
            tags: Vec::new(),
            status: None,
        }
    }
}

#[async_trait]
impl Adapter for SyntheticLoad {
    fn name(&self) -> &str {
        "synthetic-load"
    }

    fn declare_tags(&mut self, tags: &mut TagRegistrar<'_>) -> Result<(), CatalogError> {
        let path = device_path(&self.config.station, &self.config.device);
        self.status = Some(DeviceStatus::declare(tags, &path)?);
        self.tags = (0..self.config.tags)
            .map(|i| {
                tags.register(TagSpec::new(
                    format!("{path}/{}", SyntheticConfig::tag_name(i)),
                    DataType::Float64,
                ))
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    async fn run(self: Box<Self>, mut ctx: AdapterContext) {
        let period = Duration::from_secs_f64(1.0 / self.config.rate_hz);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let scale = 1.0 / f64::from(self.config.tags.max(1));
        if let Some(status) = &self.status {
            status.healthy(&mut ctx.publisher, Timestamp::now());
        }
        let mut round: u64 = 0;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                // Synthetic tags are read-only; answer rather than leave the client waiting.
                Some(command) = ctx.commands.recv() => command.refuse(),
                _ = interval.tick() => {
                    round += 1;
                    let now = Timestamp::now();
                    // Every tag changes every round; the value encodes round and tag, so a
                    // consumer can check it saw every change.
                    for (i, &tag) in self.tags.iter().enumerate() {
                        ctx.publisher.set(tag, Value::Float(round as f64 + i as f64 * scale), now);
                    }
                    ctx.publisher.flush();
                }
            }
        }
    }
}
