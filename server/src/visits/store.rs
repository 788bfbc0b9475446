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
-- Stops as identities: the truck comes back to a town once or twice a year, and each visit is a
-- stop of its own. Town and venue are attributes; records point at their stop by `stop_id`
-- (added by the migration below; `stop`, the town, stays on every record).
CREATE TABLE IF NOT EXISTS stops (
    id INTEGER PRIMARY KEY,
    town TEXT NOT NULL,
    venue TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    first_day TEXT NOT NULL DEFAULT '',
    last_day TEXT NOT NULL DEFAULT '',
    UNIQUE (town, venue, first_day)
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

/// Version 1: records point at a stop of the `stops` table (`stop_id`). Files from before it
/// are migrated in one transaction at open, keeping every record: each record is given the stop
/// its town was filed under (the current stop first, then the configured one, then a stop of
/// its own for any other town, dates unknown).
const MIGRATE_TO_1: &str = "
INSERT OR IGNORE INTO stops (town, venue, first_day, last_day)
    SELECT town, venue, first_day, last_day FROM stop WHERE role = 'current';
INSERT OR IGNORE INTO stops (town, venue, first_day, last_day)
    SELECT town, venue, first_day, last_day FROM stop WHERE role = 'configured';
INSERT OR IGNORE INTO stops (town)
    SELECT DISTINCT stop FROM visits WHERE stop NOT IN (SELECT town FROM stops)
    UNION SELECT DISTINCT stop FROM survey WHERE stop NOT IN (SELECT town FROM stops);
UPDATE visits SET stop_id = (SELECT id FROM stops s WHERE s.town = visits.stop ORDER BY s.id LIMIT 1)
    WHERE stop_id IS NULL;
UPDATE survey SET stop_id = (SELECT id FROM stops s WHERE s.town = survey.stop ORDER BY s.id LIMIT 1)
    WHERE stop_id IS NULL;
PRAGMA user_version = 1;
";

/// Indexes on the migrated columns.
const INDEXES_1: &str = "
CREATE INDEX IF NOT EXISTS visits_stop_id ON visits (stop_id, audience, size);
CREATE INDEX IF NOT EXISTS survey_stop_id ON survey (stop_id, audience, satisfaction, view_changed);
";

fn migrate(db: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < 1 {
        let tx = db.transaction()?;
        for table in ["visits", "survey"] {
            let has: bool = tx
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'stop_id'"
                ))?
                .exists([])?;
            if !has {
                tx.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN stop_id INTEGER REFERENCES stops (id)"
                ))?;
            }
        }
        tx.execute_batch(MIGRATE_TO_1)?;
        tx.commit()?;
    }
    db.execute_batch(INDEXES_1)?;
    Ok(())
}

/// The stop's id, created if new (same town, venue and first day: the same stop).
fn upsert_stop(db: &Connection, stop: &Stop) -> rusqlite::Result<i64> {
    db.execute(
        "INSERT INTO stops (town, venue, first_day, last_day) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (town, venue, first_day) DO UPDATE SET last_day = excluded.last_day",
        params![stop.town, stop.venue, stop.first_day, stop.last_day],
    )?;
    db.query_row(
        "SELECT id FROM stops WHERE town = ?1 AND venue = ?2 AND first_day = ?3",
        params![stop.town, stop.venue, stop.first_day],
        |r| r.get(0),
    )
}

/// The stop a record naming `town` belongs to: the current stop when it is in that town, else
/// the latest stop there, else a new stop in that town (dates unknown).
fn stop_for_town(db: &Connection, town: &str, current: &Stop) -> rusqlite::Result<i64> {
    if town == current.town {
        return upsert_stop(db, current);
    }
    let latest: Option<i64> = db
        .query_row(
            "SELECT id FROM stops WHERE town = ?1 ORDER BY first_day DESC, id DESC LIMIT 1",
            [town],
            |r| r.get(0),
        )
        .optional()?;
    match latest {
        Some(id) => Ok(id),
        None => {
            db.execute("INSERT INTO stops (town) VALUES (?1)", [town])?;
            Ok(db.last_insert_rowid())
        }
    }
}

/// One row of the `stops` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopRecord {
    pub id: i64,
    pub town: String,
    pub venue: String,
    pub kind: String,
    pub first_day: String,
    pub last_day: String,
}

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
    /// `[stop]` of a reloaded configuration: the current stop, and the one the next start
    /// compares the file with (so a restart does not take the file for a new edit).
    Configure(Stop),
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
    /// A town (every stop there).
    pub stop: Option<&'a str>,
    pub day: Option<&'a str>,
    /// One stop, by identity.
    pub stop_id: Option<i64>,
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
        if let Some(id) = self.stop_id {
            values.push(id.to_string());
            clause.push_str(&format!(" AND stop_id = ?{}", values.len()));
        }
        (clause, values)
    }
}

/// Column to group figures by.
#[derive(Debug, Clone, Copy)]
pub enum GroupBy {
    Audience,
    Day,
    /// By town.
    Stop,
    /// By stop identity (the id, as text).
    StopId,
}

impl GroupBy {
    fn column(self) -> &'static str {
        match self {
            GroupBy::Audience => "audience",
            GroupBy::Day => "day",
            GroupBy::Stop => "stop",
            GroupBy::StopId => "CAST(stop_id AS TEXT)",
        }
    }

    /// The column of the `survey` table aliased `s`.
    fn qualified(self) -> &'static str {
        match self {
            GroupBy::Audience => "s.audience",
            GroupBy::Day => "s.day",
            GroupBy::Stop => "s.stop",
            GroupBy::StopId => "CAST(s.stop_id AS TEXT)",
        }
    }
}

pub struct Store {
    db: Connection,
    /// The current stop, as the writer knows it (records without a stop go to it).
    current: Option<Stop>,
}

impl Store {
    /// Open the database, creating it if needed, and settle the current stop: the one stored,
    /// unless `[stop]` in the configuration changed since the last start (then the crew edited
    /// the file for a new stop, and the file wins).
    pub fn open(storage: &StorageConfig, configured: &Stop) -> Result<(Store, Stop), StoreError> {
        let mut db = storage.open_database(DATABASE_FILE)?;
        db.execute_batch(SCHEMA)?;
        migrate(&mut db)?;
        let mut store = Store { db, current: None };
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
        upsert_stop(&store.db, &current)?;
        store.current = Some(current.clone());
        Ok((store, current))
    }

    /// A second connection for readers (statistics over HTTP), beside the writer.
    pub fn open_reader(storage: &StorageConfig) -> Result<Store, StoreError> {
        Ok(Store {
            db: storage.open_database(DATABASE_FILE)?,
            current: None,
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

    /// Record the planned stops (tour calendar) with their kind, so they have ids before the
    /// truck gets there.
    pub fn plan(&mut self, tour: &[super::tour::PlannedStop]) -> Result<(), StoreError> {
        let tx = self.db.transaction()?;
        for p in tour {
            tx.execute(
                "INSERT INTO stops (town, venue, kind, first_day, last_day) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (town, venue, first_day) DO UPDATE SET kind = excluded.kind, last_day = excluded.last_day",
                params![p.town, p.venue, p.kind.as_str(), p.first_day, p.last_day],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stop, by id.
    pub fn stops(&self) -> Result<Vec<StopRecord>, StoreError> {
        let mut statement = self.db.prepare_cached(
            "SELECT id, town, venue, kind, first_day, last_day FROM stops ORDER BY id",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(StopRecord {
                id: r.get(0)?,
                town: r.get(1)?,
                venue: r.get(2)?,
                kind: r.get(3)?,
                first_day: r.get(4)?,
                last_day: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The row of `stop` (same town, venue and first day), if it has one.
    pub fn stop_record(&self, stop: &Stop) -> Result<Option<StopRecord>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT id, town, venue, kind, first_day, last_day FROM stops
                 WHERE town = ?1 AND venue = ?2 AND first_day = ?3",
                params![stop.town, stop.venue, stop.first_day],
                |r| {
                    Ok(StopRecord {
                        id: r.get(0)?,
                        town: r.get(1)?,
                        venue: r.get(2)?,
                        kind: r.get(3)?,
                        first_day: r.get(4)?,
                        last_day: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// The id of `stop` (same town, venue and first day), if it has one.
    pub fn stop_id(&self, stop: &Stop) -> Result<Option<i64>, StoreError> {
        Ok(self
            .db
            .query_row(
                "SELECT id FROM stops WHERE town = ?1 AND venue = ?2 AND first_day = ?3",
                params![stop.town, stop.venue, stop.first_day],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Write everything in one transaction, committed (synchronous FULL) before returning:
    /// the row ids, in order (0 for a stop).
    pub fn write(&mut self, writes: &[Write]) -> Result<Vec<i64>, StoreError> {
        let mut current = self.current.clone().unwrap_or_else(|| Stop {
            town: String::new(),
            venue: String::new(),
            first_day: String::new(),
            last_day: String::new(),
        });
        let tx = self.db.transaction()?;
        let mut ids = Vec::with_capacity(writes.len());
        {
            let mut visit = tx.prepare_cached(
                "INSERT INTO visits (at_ns, day, stop, audience, size, source, stop_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut survey = tx.prepare_cached(
                "INSERT INTO survey (at_ns, day, stop, audience, satisfaction, view_changed, source, stop_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
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
                            source,
                            stop_for_town(&tx, stop, &current)?
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
                            source,
                            stop_for_town(&tx, stop, &current)?
                        ])?;
                        let id = tx.last_insert_rowid();
                        for t in &r.trades {
                            trade.execute(params![id, t])?;
                        }
                        ids.push(id);
                    }
                    Write::SetStop(stop) => {
                        save_stop(&tx, "current", stop)?;
                        ids.push(upsert_stop(&tx, stop)?);
                        current = stop.clone();
                    }
                    Write::Configure(stop) => {
                        save_stop(&tx, "configured", stop)?;
                        save_stop(&tx, "current", stop)?;
                        ids.push(upsert_stop(&tx, stop)?);
                        current = stop.clone();
                    }
                }
            }
        }
        tx.commit()?;
        if self.current.is_some() {
            self.current = Some(current);
        }
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
        self.counts_grouped(
            scope,
            by,
            "COUNT(*), SUM(satisfaction >= 3), SUM(view_changed) FROM survey",
            |c| SurveyFigures::new(c[0], c[1], c[2]),
        )
    }

    /// How many answers in `scope` chose each trade, grouped by `by` (`None`: in total, key "").
    pub fn trades_grouped(
        &self,
        scope: Scope<'_>,
        by: Option<GroupBy>,
    ) -> Result<BTreeMap<String, BTreeMap<String, u64>>, StoreError> {
        let (clause, values) = scope.filter();
        let key = by.map_or("''", |b| b.qualified());
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
        self.counts_grouped(scope, by, "SUM(size), COUNT(*) FROM visits", |c| {
            VisitFigures {
                visitors: c[0],
                groups: c[1],
            }
        })
    }

    /// `SELECT <by>, <counts> FROM <table> WHERE <scope> GROUP BY 1`, each group's counts
    /// (read as 0 when negative) made into a `T`.
    fn counts_grouped<T>(
        &self,
        scope: Scope<'_>,
        by: GroupBy,
        counts_from: &str,
        make: impl Fn(&[u64]) -> T,
    ) -> Result<BTreeMap<String, T>, StoreError> {
        let (clause, values) = scope.filter();
        let sql = format!(
            "SELECT {by}, {counts_from} WHERE {clause} GROUP BY 1",
            by = by.column()
        );
        let mut statement = self.db.prepare_cached(&sql)?;
        let columns = statement.column_count();
        let rows = statement.query_map(params_from_iter(values), |r| {
            let counts = (1..columns)
                .map(|i| r.get::<_, i64>(i).map(|n| n.max(0) as u64))
                .collect::<rusqlite::Result<Vec<u64>>>()?;
            Ok((r.get::<_, String>(0)?, make(&counts)))
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

    /// The schema of the first release, before stops had an identity.
    const SCHEMA_0: &str = "
        CREATE TABLE stop (role TEXT PRIMARY KEY, town TEXT NOT NULL, venue TEXT NOT NULL,
            first_day TEXT NOT NULL, last_day TEXT NOT NULL);
        CREATE TABLE visits (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, day TEXT NOT NULL,
            stop TEXT NOT NULL, audience TEXT NOT NULL, size INTEGER NOT NULL, source TEXT NOT NULL);
        CREATE TABLE survey (id INTEGER PRIMARY KEY, at_ns INTEGER NOT NULL, day TEXT NOT NULL,
            stop TEXT NOT NULL, audience TEXT NOT NULL, satisfaction INTEGER NOT NULL,
            view_changed INTEGER NOT NULL, source TEXT NOT NULL);
        INSERT INTO stop VALUES ('current', 'Lens', 'Lycée', '2026-11-23', '2026-11-27');
        INSERT INTO stop VALUES ('configured', 'Lens', 'Lycée', '2026-11-23', '2026-11-27');
        INSERT INTO visits VALUES (1, 1, '2026-11-23', 'Lens', 'student', 24, 'http');
        INSERT INTO visits VALUES (2, 2, '2026-11-24', 'Lens', 'teacher', 2, 'http');
        INSERT INTO visits VALUES (3, 3, '2026-10-05', 'Arras', 'company', 5, 'opcua');
        INSERT INTO survey VALUES (1, 1, '2026-11-23', 'Lens', 'student', 4, 1, 'http');
        INSERT INTO survey VALUES (2, 2, '2026-11-23', 'Lens', 'student', 3, 0, 'mqtt');
        INSERT INTO survey VALUES (3, 3, '2026-11-24', 'Lens', 'teacher', 1, 1, 'http');
        INSERT INTO survey VALUES (4, 4, '2026-10-05', 'Béthune', 'company', 2, 0, 'http');
    ";

    #[test]
    fn the_migration_keeps_every_record_and_two_stops_in_one_town_stay_apart() {
        let dir = std::env::temp_dir().join(format!("fabrique-migrate-{}", std::process::id()));
        let storage = StorageConfig {
            data_dir: dir.clone(),
        };
        let lens = Stop {
            town: "Lens".into(),
            venue: "Lycée".into(),
            first_day: "2026-11-23".into(),
            last_day: "2026-11-27".into(),
        };
        storage
            .open_database(DATABASE_FILE)
            .unwrap()
            .execute_batch(SCHEMA_0)
            .unwrap();
        let (mut store, current) = Store::open(&storage, &lens).unwrap();
        assert_eq!(current, lens);
        let count = |store: &Store, sql: &str| -> i64 {
            store.db.query_row(sql, [], |r| r.get(0)).unwrap()
        };
        assert_eq!(count(&store, "SELECT COUNT(*) FROM visits"), 3);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM survey"), 4);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM visits WHERE stop_id IS NULL")
                + count(&store, "SELECT COUNT(*) FROM survey WHERE stop_id IS NULL"),
            0
        );
        let all = store.figures(Scope::default()).unwrap();
        assert_eq!((all.survey.responses, all.visits.visitors), (4, 31));
        let lens_id = store.stop_id(&lens).unwrap().unwrap();
        let at_lens = store
            .figures(Scope {
                stop_id: Some(lens_id),
                ..Scope::default()
            })
            .unwrap();
        assert_eq!((at_lens.survey.responses, at_lens.visits.visitors), (3, 26));
        let towns: Vec<String> = store.stops().unwrap().into_iter().map(|s| s.town).collect();
        assert_eq!(towns, ["Lens", "Arras", "Béthune"]);

        // The truck comes back to Lens in May: a new stop, apart from November's.
        let may = Stop {
            first_day: "2027-05-10".into(),
            last_day: "2027-05-14".into(),
            ..lens.clone()
        };
        store.write(&[Write::SetStop(may.clone())]).unwrap();
        store
            .write(&[survey(Audience::Parent, 4, true, "Lens")])
            .unwrap();
        let may_id = store.stop_id(&may).unwrap().unwrap();
        assert_ne!(may_id, lens_id);
        let by_id = store
            .survey_grouped(Scope::default(), GroupBy::StopId)
            .unwrap();
        assert_eq!(by_id[&lens_id.to_string()].responses, 3);
        assert_eq!(by_id[&may_id.to_string()].responses, 1);
        let by_town = store
            .survey_grouped(Scope::default(), GroupBy::Stop)
            .unwrap();
        assert_eq!(by_town["Lens"].responses, 4);
        drop(store);
        // Opening again migrates nothing twice.
        let (store, _) = Store::open(&storage, &lens).unwrap();
        assert_eq!(count(&store, "SELECT COUNT(*) FROM survey"), 5);
        assert_eq!(store.stops().unwrap().len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
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
                ..Scope::default()
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
