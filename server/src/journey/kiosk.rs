//! The kiosk: a scan turns a design into an order on the line, once.
//!
//! A scan claims the design in the database (committed) before it asks the line for an order,
//! so a second scan of the same code is refused even while the first waits for the line; if
//! the line refuses, the claim is released and the code can be scanned again. Whatever the
//! outcome, nothing is launched unless the answer is an order id.

use std::sync::atomic::{AtomicU64, Ordering};

use fabrique_adapters::{CallError, Timestamp, Value};
use opcua::types::StatusCode as UaStatus;

use super::codes::DesignCode;
use super::designs::ClaimRefused;
use super::Journey;

/// Why a scan launched nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanError {
    /// Not a code at all (wrong length, a character the codes never use).
    InvalidCode,
    Unknown,
    AlreadyLaunched(Option<String>),
    Expired {
        expires_ns: i64,
    },
    LineStopped,
    /// The line refused the order or did not answer.
    LineRefused(String),
    /// The gateway has no line to launch on.
    NoLine,
    Store(String),
}

impl ScanError {
    pub fn kind(&self) -> &'static str {
        match self {
            ScanError::InvalidCode => "invalid-code",
            ScanError::Unknown => "unknown-code",
            ScanError::AlreadyLaunched(_) => "already-launched",
            ScanError::Expired { .. } => "expired",
            ScanError::LineStopped => "line-stopped",
            ScanError::LineRefused(_) => "line-refused",
            ScanError::NoLine => "no-line",
            ScanError::Store(_) => "not-stored",
        }
    }

    /// What the kiosk shows, in French.
    pub fn message(&self) -> String {
        match self {
            ScanError::InvalidCode => {
                "Ce code n'est pas valide : il a 6 caractères, chiffres et lettres majuscules.".into()
            }
            ScanError::Unknown => {
                "Code inconnu : vérifiez les 6 caractères ou demandez à l'animateur·rice.".into()
            }
            ScanError::AlreadyLaunched(Some(order)) => format!(
                "Ce support est déjà lancé (commande {order}) : suivez-le sur votre téléphone."
            ),
            ScanError::AlreadyLaunched(None) => {
                "Ce support est déjà en cours de lancement : patientez quelques secondes.".into()
            }
            ScanError::Expired { expires_ns } => format!(
                "Ce code a expiré le {} : créez un nouveau design sur la page Concevoir.",
                french_date(*expires_ns)
            ),
            ScanError::LineStopped => {
                "La ligne est à l'arrêt : patientez, votre code reste valable.".into()
            }
            ScanError::LineRefused(_) | ScanError::NoLine => {
                "La ligne ne peut pas prendre votre commande pour l'instant : votre code reste valable.".into()
            }
            ScanError::Store(_) => {
                "Un problème technique empêche le lancement : votre code reste valable.".into()
            }
        }
    }

    /// The HTTP status of `POST /api/kiosk/scan`.
    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode as S;
        match self {
            ScanError::InvalidCode => S::BAD_REQUEST,
            ScanError::Unknown => S::NOT_FOUND,
            ScanError::AlreadyLaunched(_) => S::CONFLICT,
            ScanError::Expired { .. } => S::GONE,
            ScanError::LineStopped | ScanError::NoLine => S::SERVICE_UNAVAILABLE,
            ScanError::LineRefused(_) => S::BAD_GATEWAY,
            ScanError::Store(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The status of the OPC UA method `Scan`.
    pub fn ua_status(&self) -> UaStatus {
        match self {
            ScanError::InvalidCode => UaStatus::BadInvalidArgument,
            ScanError::Unknown => UaStatus::BadNotFound,
            ScanError::AlreadyLaunched(_) => UaStatus::BadAlreadyExists,
            ScanError::Expired { .. } => UaStatus::BadRequestNotAllowed,
            ScanError::LineStopped => UaStatus::BadInvalidState,
            ScanError::LineRefused(_) | ScanError::NoLine => UaStatus::BadResourceUnavailable,
            ScanError::Store(_) => UaStatus::BadInternalError,
        }
    }

    pub fn to_call_error(&self) -> CallError {
        CallError::Status(
            self.ua_status(),
            format!("{}: {}", self.kind(), self.message()),
        )
    }
}

fn french_date(ns: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%d/%m/%Y à %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// The kiosk's counters, published under `Stations/Reception/Kiosk`.
#[derive(Default)]
pub struct KioskCounters {
    pub scans: AtomicU64,
    pub launched: AtomicU64,
    pub rejected: AtomicU64,
    pub last: parking_lot::Mutex<Option<LastScan>>,
    /// Designs stored since start (one by one or by class).
    pub designs_created: AtomicU64,
    /// Design and class uploads refused since start (bad model or text, bad body).
    pub designs_refused: AtomicU64,
    /// Kinds of refusal already logged.
    logged: parking_lot::Mutex<std::collections::HashSet<&'static str>>,
}

#[derive(Debug, Clone)]
pub struct LastScan {
    pub at: Timestamp,
    pub code: String,
    /// The order id, or the kind of refusal.
    pub result: String,
}

impl Journey {
    /// Count designs stored, for `DesignsCreated`.
    pub fn designs_created(&self, n: usize) {
        self.counters
            .designs_created
            .fetch_add(n as u64, Ordering::Relaxed);
        self.kiosk_changed.notify_one();
    }

    /// Count a refused design or class upload, logged once per kind.
    pub fn design_refused(&self, kind: &'static str, reason: &str) {
        self.counters
            .designs_refused
            .fetch_add(1, Ordering::Relaxed);
        if self.counters.logged.lock().insert(kind) {
            tracing::warn!(
                kind,
                reason,
                "design refused (further ones of this kind are counted, not logged)"
            );
        }
        self.kiosk_changed.notify_one();
    }

    /// Scan `raw` (typed, or sent by a USB scanner): launch its design as an order.
    pub async fn scan(&self, raw: &str) -> Result<String, ScanError> {
        let result = self.scan_inner(raw).await;
        let counters = &self.counters;
        counters.scans.fetch_add(1, Ordering::Relaxed);
        let outcome = match &result {
            Ok(order) => {
                counters.launched.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%order, "design launched at the kiosk");
                order.clone()
            }
            Err(error) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                // Counted always (`Rejected`), logged once per kind: a visitor retrying a bad
                // code, or a misbehaving client, does not flood the log.
                if counters.logged.lock().insert(error.kind()) {
                    tracing::warn!(kind = error.kind(), reason = %error.message(), "kiosk scan refused (further ones of this kind are counted, not logged)");
                } else {
                    tracing::debug!(kind = error.kind(), "kiosk scan refused");
                }
                error.kind().to_owned()
            }
        };
        *counters.last.lock() = Some(LastScan {
            at: Timestamp::now(),
            code: raw.chars().filter(|c| !c.is_control()).take(20).collect(),
            result: outcome,
        });
        self.kiosk_changed.notify_one();
        result
    }

    async fn scan_inner(&self, raw: &str) -> Result<String, ScanError> {
        let code = DesignCode::parse(raw).ok_or(ScanError::InvalidCode)?;
        let runtime = self.runtime.get().ok_or(ScanError::NoLine)?;
        // One scan at a time: the kiosk is one screen, and this keeps claim and launch in order.
        let _one = self.scan_lock.lock().await;
        // Unknown, expired and already launched codes are told as such even while the line
        // is stopped: the visitor learns what is wrong with the code first.
        let now = Timestamp::now().as_nanos();
        let design = self
            .with_designs({
                let code = code.clone();
                move |d| d.get(&code)
            })
            .await
            .map_err(ScanError::Store)?;
        match design {
            None => return Err(ScanError::Unknown),
            Some(d) if d.launched_ns.is_some() || d.order.is_some() => {
                return Err(ScanError::AlreadyLaunched(d.order))
            }
            Some(d) if d.expires_ns <= now => {
                return Err(ScanError::Expired {
                    expires_ns: d.expires_ns,
                })
            }
            Some(_) => {}
        }
        let anchor = runtime.line.line_state.ok_or(ScanError::NoLine)?;
        let running = matches!(runtime.bus.latest(anchor).value, Some(Value::Text(ref s)) if &**s == "Running");
        if !running {
            return Err(ScanError::LineStopped);
        }
        let claimed = self
            .with_designs({
                let code = code.clone();
                move |d| d.claim(&code, now)
            })
            .await
            .map_err(ScanError::Store)?;
        let design = claimed.map_err(|refused| match refused {
            ClaimRefused::Unknown => ScanError::Unknown,
            ClaimRefused::AlreadyLaunched(order) => ScanError::AlreadyLaunched(order),
            ClaimRefused::Expired { expires_ns } => ScanError::Expired { expires_ns },
        })?;
        let placed = runtime
            .router
            .call(
                anchor,
                "Line/SubmitOrder".into(),
                vec![Value::text(&design.model), Value::text(&design.text)],
            )
            .await;
        let order = match placed {
            Ok(outputs) => match outputs.into_iter().next() {
                Some(Value::Text(id)) => id.to_string(),
                _ => return Err(ScanError::LineRefused("the line gave no order id".into())),
            },
            Err(error) => {
                let released = self
                    .with_designs({
                        let code = code.clone();
                        move |d| d.release(&code)
                    })
                    .await;
                if let Err(e) = released {
                    tracing::error!(error = %e, "cannot release a design the line refused");
                }
                return Err(ScanError::LineRefused(error.to_string()));
            }
        };
        let recorded = self
            .with_designs({
                let order = order.clone();
                move |d| d.set_order(&code, &order)
            })
            .await;
        if let Err(error) = recorded {
            // The order is on the line and the design stays claimed (no second launch); only
            // the link from design to order is missing.
            tracing::error!(%order, %error, "order launched but not linked to its design");
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_kind_and_statuses() {
        let all = [
            ScanError::InvalidCode,
            ScanError::Unknown,
            ScanError::AlreadyLaunched(Some("ORD-000001".into())),
            ScanError::Expired { expires_ns: 0 },
            ScanError::LineStopped,
        ];
        let kinds: std::collections::HashSet<_> = all.iter().map(|e| e.kind()).collect();
        let ua: std::collections::HashSet<_> = all.iter().map(|e| e.ua_status()).collect();
        assert_eq!(kinds.len(), all.len());
        assert_eq!(ua.len(), all.len());
        assert!(all[2].message().contains("ORD-000001"));
        assert!(matches!(
            all[1].to_call_error(),
            CallError::Status(UaStatus::BadNotFound, _)
        ));
    }
}
