//! The visits database: check-ins, survey answers and the current stop, in one SQLite file.
//!
//! Statistics are SQL aggregates over the stored rows, never running totals kept beside them:
//! whatever happened (a restart, a crash between two writes), the figures are what the rows say.

use std::collections::BTreeMap;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

use super::records::{day_of, Audience, CheckIn, Stop, SurveyResponse};
use crate::storage::{StorageConfig, StorageError};

pub const DATABASE_FILE: &str = "visits.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stop (
    role TEXT PRIMARY KEY CHECK (role IN ('current', 'configured')),
    town TEXT NOT NULL,
    venue TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS visits (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    day TEXT NOT NULL,
    stop TEXT NOT NULL,
    audience TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size > 0),
    source TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS survey (
    id INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL,
    day TEXT NOT NULL,
    stop TEXT NOT NULL,
    audience TEXT NOT NULL,
    satisfaction INTEGER NOT NULL CHECK (satisfaction BETWEEN 1 AND 4),
    view_changed INTEGER NOT NULL CHECK (view_changed IN (0, 1)),
    source TEXT NOT NULL
);
-- Answers to the trades question (journey): one row per trade chosen. Added after the first
-- release: older files get the table empty, their answers simply did not name trades.
CREATE TABLE IF NOT EXISTS survey_trades (
    survey_id INTEGER NOT NULL REFERENCES survey (id),
    trade TEXT NOT NULL,
    PRIMARY KEY (survey_id, trade)
);
CREATE INDEX IF NOT EXISTS survey_trades_trade ON survey_trades (trade, survey_id);
-- Covering indexes: every aggregate (by audience, day or stop; over everything, one stop or one
-- day) reads an index in order, without touching the table or sorting.
CREATE INDEX IF NOT EXISTS visits_audience ON visits (audience, size);
CREATE INDEX IF NOT EXISTS visits_stop ON visits (stop, audience, size);
CREATE INDEX IF NOT EXISTS visits_day ON visits (day, audience, size);
CREATE INDEX IF NOT EXISTS visits_stop_day ON visits (stop, day, audience, size);
CREATE INDEX IF NOT EXISTS survey_audience ON survey (audience, satisfaction, view_changed);
CREATE INDEX IF NOT EXISTS survey_stop ON survey (stop, audience, satisfaction, view_changed);
CREATE INDEX IF NOT EXISTS survey_day ON survey (day, audience, satisfaction, view_changed);
CREATE INDEX IF NOT EXISTS survey_stop_day ON survey (stop, day, audience, satisfaction, view_changed);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Open(#[from] StorageError),
    #[error("visits database ({DATABASE_FILE}): {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("visits database task failed: {0}")]
    Task(String),
}

/// One write, with the stop it belongs to already resolved.
#[derive(Debug, Clone)]
pub enum Write {
    Visit {
        visit: CheckIn,
        stop: String,
        source: &'static str,
    },
    Survey {
        response: SurveyResponse,
        stop: String,
        source: &'static str,
    },
    SetStop(Stop),
}

/// Survey figures over some set of responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SurveyFigures {
    pub responses: u64,
    /// Satisfaction 3 or 4.
    pub satisfied: u64,
    pub view_changed: u64,
    /// `100 * satisfied / responses`, 0 without responses.
    pub satisfied_pct: f64,
    pub view_changed_pct: f64,
}

impl SurveyFigures {
    fn new(responses: u64, satisfied: u64, view_changed: u64) -> Self {
        SurveyFigures {
            responses,
            satisfied,
            view_changed,
            satisfied_pct: pct(satisfied, responses),
            view_changed_pct: pct(view_changed, responses),
        }
    }

    fn add(&self, other: &SurveyFigures) -> Self {
        SurveyFigures::new(
            self.responses + other.responses,
            self.satisfied + other.satisfied,
            self.view_changed + other.view_changed,
        )
    }
}

/// A share in percent, computed the same way everywhere (integers first, one division), so
/// that a client recomputing it from the counts gets the same double.
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (100 * part) as f64 / whole as f64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VisitFigures {
    pub visitors: u64,
    pub groups: u64,
}

/// Survey and visits over one scope, in total and by audience (every audience listed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub survey: SurveyFigures,
    pub survey_by_audience: BTreeMap<Audience, SurveyFigures>,
    pub visits: VisitFigures,
    pub visits_by_audience: BTreeMap<Audience, VisitFigures>,
}

/// Which rows a figure covers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub stop: Option<&'a str>,
    pub day: Option<&'a str>,
}

impl Scope<'_> {
    fn filter(&self) -> (String, Vec<String>) {
        let mut clause = String::from("1 = 1");
        let mut values = Vec::new();
        if let Some(stop) = self.stop {
            values.push(stop.to_owned());
            clause.push_str(&format!(" AND stop = ?{}", values.len()));
        }
        if let Some(day) = self.day {
            values.push(day.to_owned());
            clause.push_str(&format!(" AND day = ?{}", values.len()));
        }
        (clause, values)
    }
}

/// Column to group figures by.
#[derive(Debug, Clone, Copy)]
pub enum GroupBy {
    Audience,
    Day,
    Stop,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            GroupBy::Audience => "audience",
            GroupBy::Day => "day",
            GroupBy::Stop => "stop",
        }
    }
}

pub struct Store {
    db: Connection,
}

impl Store {
    /// Open the database, creating it if needed, and settle the current stop: the one stored,
    /// unless `[stop]` in the configuration changed since the last start (then the crew edited
    /// the file for a new stop, and the file wins).
    pub fn open(storage: &StorageConfig, configured: &Stop) -> Result<(Store, Stop), StoreError> {
        let db = storage.open_database(DATABASE_FILE)?;
        db.execute_batch(SCHEMA)?;
        let mut store = Store { db };
        let last_configured = store.stop("configured")?;
        let current = match (store.stop("current")?, last_configured) {
            (Some(current), Some(last)) if last == *configured => current,
            _ => {
                let tx = store.db.transaction()?;
                save_stop(&tx, "configured", configured)?;
                save_stop(&tx, "current", configured)?;
                tx.commit()?;
                configured.clone()
            }
        };
        Ok((store, current))
    }

    /// A second connection for readers (statistics over HTTP), beside the writer.
    pub fn open_reader(storage: &StorageConfig) -> Result<Store, StoreError> {
        Ok(Store {
            db: storage.open_database(DATABASE_FILE)?,
        })
    }

    fn stop(&self, role: &str) -> Result<Option<Stop>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT town, venue, first_day, last_day FROM stop WHERE role = ?1",
                [role],
                |r| {
                    Ok(Stop {
                        town: r.get(0)?,
                        venue: r.get(1)?,
                        first_day: r.get(2)?,
                        last_day: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Write everything in one transaction, committed (synchronous FULL) before returning:
    /// the row ids, in order (0 for a stop).
    pub fn write(&mut self, writes: &[Write]) -> Result<Vec<i64>, StoreError> {
        let tx = self.db.transaction()?;
        let mut ids = Vec::with_capacity(writes.len());
        {
            let mut visit = tx.prepare_cached(
                "INSERT INTO visits (at_ns, day, stop, audience, size, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut survey = tx.prepare_cached(
                "INSERT INTO survey (at_ns, day, stop, audience, satisfaction, view_changed, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut trade = tx.prepare_cached(
                "INSERT OR IGNORE INTO survey_trades (survey_id, trade) VALUES (?1, ?2)",
            )?;
            for write in writes {
                match write {
                    Write::Visit {
                        visit: v,
                        stop,
                        source,
                    } => {
                        visit.execute(params![
                            v.at.as_nanos(),
                            day_of(v.at),
                            stop,
                            v.audience.code(),
                            v.size as i64,
                            source
                        ])?;
                        ids.push(tx.last_insert_rowid());
                    }
                    Write::Survey {
                        response: r,
                        stop,
                        source,
                    } => {
                        survey.execute(params![
                            r.at.as_nanos(),
                            day_of(r.at),
                            stop,
                            r.audience.code(),
                            r.satisfaction,
                            r.view_changed,
                            source
                        ])?;
                        let id = tx.last_insert_rowid();
                        for t in &r.trades {
                            trade.execute(params![id, t])?;
                        }
                        ids.push(id);
                    }
                    Write::SetStop(stop) => {
                        save_stop(&tx, "current", stop)?;
                        ids.push(0);
                    }
                }
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Figures over `scope`, by audience and in total.
    pub fn figures(&self, scope: Scope<'_>) -> Result<Figures, StoreError> {
        let mut figures = Figures::default();
        for audience in Audience::ALL {
            figures
                .survey_by_audience
                .insert(audience, SurveyFigures::default());
            figures
                .visits_by_audience
                .insert(audience, VisitFigures::default());
        }
        for (code, survey) in self.survey_grouped(scope, GroupBy::Audience)? {
            if let Some(audience) = Audience::from_code(&code) {
                figures.survey_by_audience.insert(audience, survey);
            }
            figures.survey = figures.survey.add(&survey);
        }
        for (code, visits) in self.visits_grouped(scope, GroupBy::Audience)? {
            if let Some(audience) = Audience::from_code(&code) {
                figures.visits_by_audience.insert(audience, visits);
            }
            figures.visits.visitors += visits.visitors;
            figures.visits.groups += visits.groups;
        }
        Ok(figures)
    }

    pub fn survey_grouped(
        &self,
        scope: Scope<'_>,
        by: GroupBy,
    ) -> Result<BTreeMap<String, SurveyFigures>, StoreError> {
        let (clause, values) = scope.filter();
        let sql = format!(
            "SELECT {by}, COUNT(*), SUM(satisfaction >= 3), SUM(view_changed) FROM survey WHERE {clause} GROUP BY 1",
            by = by.column()
        );
        let mut statement = self.db.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(values), |r| {
            let count = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
            Ok((
                r.get::<_, String>(0)?,
                SurveyFigures::new(count(1)?, count(2)?, count(3)?),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many answers in `scope` chose each trade, grouped by `by` (`None`: in total, key "").
    pub fn trades_grouped(
        &self,
        scope: Scope<'_>,
        by: Option<GroupBy>,
    ) -> Result<BTreeMap<String, BTreeMap<String, u64>>, StoreError> {
        let (clause, values) = scope.filter();
        let key = by.map_or("''".to_owned(), |b| format!("s.{}", b.column()));
        let sql = format!(
            "SELECT {key}, t.trade, COUNT(*) FROM survey_trades t JOIN survey s ON s.id = t.survey_id
             WHERE {clause} GROUP BY 1, 2"
        );
        let mut statement = self.db.prepare_cached(&sql)?;
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut rows = statement.query(params_from_iter(values))?;
        while let Some(r) = rows.next()? {
            let n = r.get::<_, i64>(2)?.max(0) as u64;
            out.entry(r.get(0)?).or_default().insert(r.get(1)?, n);
        }
        Ok(out)
    }

    pub fn visits_grouped(
        &self,
        scope: Scope<'_>,
        by: GroupBy,
    ) -> Result<BTreeMap<String, VisitFigures>, StoreError> {
        let (clause, values) = scope.filter();
        let sql = format!(
            "SELECT {by}, SUM(size), COUNT(*) FROM visits WHERE {clause} GROUP BY 1",
            by = by.column()
        );
        let mut statement = self.db.prepare_cached(&sql)?;
        let rows = statement.query_map(params_from_iter(values), |r| {
            let count = |i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
            Ok((
                r.get::<_, String>(0)?,
                VisitFigures {
                    visitors: count(1)?,
                    groups: count(2)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn save_stop(db: &Connection, role: &str, stop: &Stop) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO stop (role, town, venue, first_day, last_day) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (role) DO UPDATE SET town = excluded.town, venue = excluded.venue,
             first_day = excluded.first_day, last_day = excluded.last_day",
        params![role, stop.town, stop.venue, stop.first_day, stop.last_day],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fabrique_adapters::Timestamp;

    fn stop(town: &str) -> Stop {
        Stop {
            town: town.into(),
            venue: "Salle".into(),
            first_day: "2026-11-23".into(),
            last_day: "2026-11-27".into(),
        }
    }

    fn survey(audience: Audience, satisfaction: u8, view_changed: bool, town: &str) -> Write {
        Write::Survey {
            response: SurveyResponse {
                audience,
                satisfaction,
                view_changed,
                at: Timestamp::from_nanos(1_795_000_000_000_000_000),
                stop: None,
                trades: vec!["roboticien".into()],
            },
            stop: town.into(),
            source: "test",
        }
    }

    #[test]
    fn figures_are_exact_aggregates_and_the_stop_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("fabrique-visits-{}", std::process::id()));
        let storage = StorageConfig {
            data_dir: dir.clone(),
        };
        let (mut store, current) = Store::open(&storage, &stop("Lens")).unwrap();
        assert_eq!(current.town, "Lens");
        let mut writes = vec![
            survey(Audience::Student, 4, true, "Lens"),
            survey(Audience::Student, 2, false, "Lens"),
            survey(Audience::Company, 3, true, "Arras"),
            Write::SetStop(stop("Arras")),
        ];
        writes.push(Write::Visit {
            visit: CheckIn::new("teacher", 3, None, None).unwrap(),
            stop: "Arras".into(),
            source: "test",
        });
        assert_eq!(store.write(&writes).unwrap().len(), 5);
        let all = store.figures(Scope::default()).unwrap();
        assert_eq!(all.survey, SurveyFigures::new(3, 2, 2));
        assert_eq!(all.survey.satisfied_pct, 200.0 / 3.0);
        assert_eq!(
            all.survey_by_audience[&Audience::Student],
            SurveyFigures::new(2, 1, 1)
        );
        assert_eq!(
            all.survey_by_audience[&Audience::Teacher],
            SurveyFigures::default()
        );
        assert_eq!(all.visits.visitors, 3);
        let arras = store
            .figures(Scope {
                stop: Some("Arras"),
                day: None,
            })
            .unwrap();
        assert_eq!(arras.survey.responses, 1);
        drop(store);
        // Same configuration: the stop set at run time wins.
        let (_, current) = Store::open(&storage, &stop("Lens")).unwrap();
        assert_eq!(current.town, "Arras");
        // A new `[stop]` in the file: the file wins.
        let (_, current) = Store::open(&storage, &stop("Douai")).unwrap();
        assert_eq!(current.town, "Douai");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
