//! The visitor's journey: a design prepared before the visit, launched at the kiosk by its code,
//! followed live on the visitor's phone, with the trades behind every step.
//!
//! ```text
//! /concevoir, POST /api/designs, POST /api/groups ──► designs.sqlite (committed before 201)
//! /borne, POST /api/kiosk/scan, OPC UA Kiosk.Scan ──► claim the design ─► Line/SubmitOrder
//!                                                       (command router, like /api/orders)
//! bus (steps, machines) + orders.sqlite ──► /suivi/{order}, /ligne (Server-Sent Events)
//! config/trades.toml ──► /api/trades, Line/Steps/StepN/Trades, the pages
//! ```

mod adapter;
mod codes;
mod designs;
mod http;
mod kiosk;
mod qr;
pub mod trades;
mod views;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use fabrique_adapters::line::LineConfig;
use fabrique_adapters::PointBus;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use adapter::KioskAdapter;
pub use http::routes;

use crate::commands::CommandRouter;
use crate::storage::{OffThread, StorageConfig};
use designs::{Designs, DesignsError};
use kiosk::KioskCounters;
use trades::{Catalogue, CatalogueError};
use views::LineTags;

/// `[journey]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JourneyConfig {
    /// How long a design can be launched after it was made, in days (decimals allowed).
    pub design_expiry_days: f64,
    /// Most designs one class upload may hold.
    pub max_group_designs: usize,
    /// A trades catalogue replacing the built-in one (`config/trades.toml` shows the layout).
    pub trades_file: Option<PathBuf>,
    /// The gateway's address as visitors' phones reach it (`http://192.168.1.10:8080`), for
    /// the follow QR code on the kiosk; unset: the address the kiosk itself used.
    pub public_url: Option<String>,
}

impl Default for JourneyConfig {
    fn default() -> Self {
        JourneyConfig {
            design_expiry_days: 30.0,
            max_group_designs: 60,
            trades_file: None,
            public_url: None,
        }
    }
}

impl JourneyConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.design_expiry_days.is_finite()
            && self.design_expiry_days > 0.0
            && self.design_expiry_days <= 3660.0)
        {
            return Err((
                "journey.design_expiry_days",
                format!(
                    "must be more than 0 and at most 3660 days, got {}",
                    self.design_expiry_days
                ),
            ));
        }
        if let Some(url) = &self.public_url {
            let scheme = url.starts_with("http://") || url.starts_with("https://");
            if !scheme || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err((
                    "journey.public_url",
                    format!("must be an http:// or https:// address, got `{url}`"),
                ));
            }
        }
        if !(1..=1000).contains(&self.max_group_designs) {
            return Err((
                "journey.max_group_designs",
                format!("must be in 1..=1000, got {}", self.max_group_designs),
            ));
        }
        Ok(())
    }

    fn expiry_ns(&self) -> i64 {
        (self.design_expiry_days * 86_400.0 * 1e9) as i64
    }
}

/// What the journey needs once the gateway runs.
struct Runtime {
    bus: PointBus,
    router: CommandRouter,
    line: LineTags,
}

/// The journey's shared state: the HTTP routes and the kiosk adapter hold it.
pub struct Journey {
    config: JourneyConfig,
    line_config: LineConfig,
    pub catalogue: Catalogue,
    storage: StorageConfig,
    designs: OffThread<Option<Designs>>,
    /// A reader of the indicators engine's order history (WAL: beside its writer).
    orders_db: OffThread<Option<Connection>>,
    runtime: OnceLock<Runtime>,
    scan_lock: tokio::sync::Mutex<()>,
    counters: KioskCounters,
    kiosk_changed: Notify,
}

#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error(transparent)]
    Designs(#[from] DesignsError),
}

impl Journey {
    /// Load the trades catalogue; nothing is opened yet (so `check` opens no database).
    pub fn new(
        config: &JourneyConfig,
        line: &LineConfig,
        storage: &StorageConfig,
    ) -> Result<Arc<Journey>, JourneyError> {
        Ok(Arc::new(Journey {
            catalogue: Catalogue::load(config.trades_file.as_deref())?,
            config: config.clone(),
            line_config: line.clone(),
            storage: storage.clone(),
            designs: OffThread::default(),
            orders_db: OffThread::default(),
            runtime: OnceLock::new(),
            scan_lock: tokio::sync::Mutex::new(()),
            counters: KioskCounters::default(),
            kiosk_changed: Notify::new(),
        }))
    }

    /// Open the designs database; called once at start, before the gateway is ready.
    pub fn open(&self) -> Result<(), JourneyError> {
        *self.designs.lock() = Some(Designs::open(&self.storage)?);
        Ok(())
    }

    /// Connect to the running gateway: the bus to read, the router to place orders.
    pub fn start(&self, bus: PointBus, router: CommandRouter) {
        let line = LineTags::resolve(&bus, &self.catalogue);
        let _ = self.runtime.set(Runtime { bus, router, line });
    }

    /// Run `f` on the designs database, off the async threads.
    async fn with_designs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Designs) -> Result<T, DesignsError> + Send + 'static,
    ) -> Result<T, String> {
        self.designs
            .run(move |designs| {
                let db = designs
                    .as_mut()
                    .ok_or_else(|| "the designs database is not open".to_owned())?;
                f(db).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// Run `f` on the order history, off the async threads; `None` without one.
    async fn with_orders<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Option<T> {
        let storage = self.storage.clone();
        self.orders_db
            .run(move |db| {
                if db.is_none() {
                    *db = storage
                        .open_database(crate::indicators::store::DATABASE_FILE)
                        .ok();
                }
                // Before the indicators engine made its tables, a query fails: no history yet.
                f(db.as_ref()?).ok()
            })
            .await
            .ok()
            .flatten()
    }
}

/// Each step's trades, for the address space (`Line/Steps/StepN/Trades`, names in French).
pub fn step_trades(catalogue: &Catalogue) -> Vec<(String, Vec<String>)> {
    (1..=catalogue.steps.len())
        .map(|n| {
            (
                fabrique_adapters::line::step_path(n),
                catalogue.at_step(n).map(|t| t.name.clone()).collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_journey_settings_name_their_key() {
        let config = JourneyConfig {
            design_expiry_days: 0.0,
            ..JourneyConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().0,
            "journey.design_expiry_days"
        );
        let config = JourneyConfig {
            public_url: Some("192.168.1.10:8080".into()),
            ..JourneyConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().0, "journey.public_url");
        assert!(JourneyConfig::default().validate().is_ok());
    }
}
