//! The designs database (`<storage.data_dir>/designs.sqlite`): designs made before the visit,
//! the class groups they belong to, and which order each one launched.
//!
//! Every write is one transaction committed (`synchronous = FULL`) before the caller answers, as
//! for survey answers: a code handed out survives a power cut, and so does a launch.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::codes::DesignCode;
use crate::storage::{StorageConfig, StorageError};

pub const DATABASE_FILE: &str = "designs.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS groups (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS designs (
    code        TEXT    PRIMARY KEY,
    model       TEXT    NOT NULL,
    text        TEXT    NOT NULL,
    group_id    INTEGER REFERENCES groups (id),
    pupil       TEXT,
    created_ns  INTEGER NOT NULL,
    expires_ns  INTEGER NOT NULL,
    -- Set when a scan claims the design, before the order is placed: a second scan is refused
    -- even while the first one waits for the line.
    launched_ns INTEGER,
    order_id    TEXT
);
CREATE INDEX IF NOT EXISTS designs_group ON designs (group_id);
CREATE INDEX IF NOT EXISTS designs_order ON designs (order_id);
";

/// A class group's id (`/api/groups/{id}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct GroupId(pub i64);

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Design {
    pub code: String,
    pub model: String,
    pub text: String,
    pub group: Option<GroupId>,
    pub pupil: Option<String>,
    pub created_ns: i64,
    pub expires_ns: i64,
    pub launched_ns: Option<i64>,
    pub order: Option<String>,
}

/// A design to store: model and text already checked against the line's rules.
#[derive(Debug, Clone)]
pub struct NewDesign {
    pub model: String,
    pub text: String,
    pub pupil: Option<String>,
}

/// Why a scan cannot claim a design.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimRefused {
    Unknown,
    /// Scanned before; the order it launched, if it got that far.
    AlreadyLaunched(Option<String>),
    Expired {
        expires_ns: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DesignsError {
    #[error(transparent)]
    Open(#[from] StorageError),
    #[error("designs database ({DATABASE_FILE}): {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("no free design code after {0} attempts")]
    NoFreeCode(usize),
}

const COLUMNS: &str =
    "code, model, text, group_id, pupil, created_ns, expires_ns, launched_ns, order_id";

fn design_from_row(r: &Row<'_>) -> rusqlite::Result<Design> {
    Ok(Design {
        code: r.get(0)?,
        model: r.get(1)?,
        text: r.get(2)?,
        group: r.get::<_, Option<i64>>(3)?.map(GroupId),
        pupil: r.get(4)?,
        created_ns: r.get(5)?,
        expires_ns: r.get(6)?,
        launched_ns: r.get(7)?,
        order: r.get(8)?,
    })
}

pub struct Designs {
    db: Connection,
}

impl Designs {
    pub fn open(storage: &StorageConfig) -> Result<Designs, DesignsError> {
        let db = storage.open_database(DATABASE_FILE)?;
        db.execute_batch(SCHEMA)?;
        Ok(Designs { db })
    }

    /// Store `designs` (with a new group named `group`, if any) in one transaction; each gets
    /// a fresh code.
    pub fn create(
        &mut self,
        designs: &[NewDesign],
        group: Option<&str>,
        now_ns: i64,
        expires_ns: i64,
    ) -> Result<(Option<GroupId>, Vec<Design>), DesignsError> {
        let mut rng = rand::rng();
        let tx = self.db.transaction()?;
        let group_id = match group {
            Some(name) => {
                tx.execute(
                    "INSERT INTO groups (name, created_ns) VALUES (?1, ?2)",
                    params![name, now_ns],
                )?;
                Some(GroupId(tx.last_insert_rowid()))
            }
            None => None,
        };
        let mut stored = Vec::with_capacity(designs.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO designs (code, model, text, group_id, pupil, created_ns, expires_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for design in designs {
                const ATTEMPTS: usize = 20;
                let mut placed = None;
                for _ in 0..ATTEMPTS {
                    let code = DesignCode::random(&mut rng);
                    let inserted = insert.execute(params![
                        code.as_str(),
                        design.model,
                        design.text,
                        group_id.map(|g| g.0),
                        design.pupil,
                        now_ns,
                        expires_ns
                    ])?;
                    if inserted == 1 {
                        placed = Some(code);
                        break;
                    }
                }
                let code = placed.ok_or(DesignsError::NoFreeCode(ATTEMPTS))?;
                stored.push(Design {
                    code: code.to_string(),
                    model: design.model.clone(),
                    text: design.text.clone(),
                    group: group_id,
                    pupil: design.pupil.clone(),
                    created_ns: now_ns,
                    expires_ns,
                    launched_ns: None,
                    order: None,
                });
            }
        }
        tx.commit()?;
        Ok((group_id, stored))
    }

    pub fn get(&self, code: &DesignCode) -> Result<Option<Design>, DesignsError> {
        Ok(self
            .db
            .query_row(
                &format!("SELECT {COLUMNS} FROM designs WHERE code = ?1"),
                [code.as_str()],
                design_from_row,
            )
            .optional()?)
    }

    /// The design that launched `order`, if one did (the most recent: a restarted simulated
    /// line reuses order ids).
    pub fn by_order(&self, order: &str) -> Result<Option<Design>, DesignsError> {
        Ok(self
            .db
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM designs WHERE order_id = ?1 ORDER BY launched_ns DESC LIMIT 1"
                ),
                [order],
                design_from_row,
            )
            .optional()?)
    }

    /// The group's name and designs, in the order they were uploaded.
    pub fn group(&self, id: GroupId) -> Result<Option<(String, Vec<Design>)>, DesignsError> {
        let name: Option<String> = self
            .db
            .query_row("SELECT name FROM groups WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(name) = name else {
            return Ok(None);
        };
        let mut statement = self.db.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM designs WHERE group_id = ?1 ORDER BY rowid"
        ))?;
        let designs = statement
            .query_map([id.0], design_from_row)?
            .collect::<Result<_, _>>()?;
        Ok(Some((name, designs)))
    }

    /// Claim a design for a launch, durably: refused if unknown, expired or claimed before.
    pub fn claim(
        &mut self,
        code: &DesignCode,
        now_ns: i64,
    ) -> Result<Result<Design, ClaimRefused>, DesignsError> {
        let tx = self.db.transaction()?;
        let design = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM designs WHERE code = ?1"),
                [code.as_str()],
                design_from_row,
            )
            .optional()?;
        let outcome = match design {
            None => Err(ClaimRefused::Unknown),
            Some(d) if d.launched_ns.is_some() || d.order.is_some() => {
                Err(ClaimRefused::AlreadyLaunched(d.order))
            }
            Some(d) if d.expires_ns <= now_ns => Err(ClaimRefused::Expired {
                expires_ns: d.expires_ns,
            }),
            Some(mut d) => {
                tx.execute(
                    "UPDATE designs SET launched_ns = ?2 WHERE code = ?1",
                    params![code.as_str(), now_ns],
                )?;
                d.launched_ns = Some(now_ns);
                Ok(d)
            }
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// The line refused the order: the design may be scanned again.
    pub fn release(&mut self, code: &DesignCode) -> Result<(), DesignsError> {
        self.db.execute(
            "UPDATE designs SET launched_ns = NULL WHERE code = ?1 AND order_id IS NULL",
            [code.as_str()],
        )?;
        Ok(())
    }

    pub fn set_order(&mut self, code: &DesignCode, order: &str) -> Result<(), DesignsError> {
        self.db.execute(
            "UPDATE designs SET order_id = ?2 WHERE code = ?1",
            params![code.as_str(), order],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_design_is_claimed_once_and_expires() {
        let dir = std::env::temp_dir().join(format!("fabrique-designs-{}", std::process::id()));
        let storage = StorageConfig {
            data_dir: dir.clone(),
        };
        let mut designs = Designs::open(&storage).unwrap();
        let new = |text: &str| NewDesign {
            model: "Wave".into(),
            text: text.into(),
            pupil: Some(text.into()),
        };
        let (group, made) = designs
            .create(&[new("Léa"), new("Noé")], Some("4e B"), 100, 1_000)
            .unwrap();
        let group = group.unwrap();
        assert_eq!(made.len(), 2);
        assert_ne!(made[0].code, made[1].code);
        let code = DesignCode::parse(&made[0].code).unwrap();
        let claimed = designs.claim(&code, 200).unwrap().unwrap();
        assert_eq!(claimed.text, "Léa");
        designs.set_order(&code, "ORD-000007").unwrap();
        assert_eq!(
            designs.claim(&code, 300).unwrap(),
            Err(ClaimRefused::AlreadyLaunched(Some("ORD-000007".into())))
        );
        let other = DesignCode::parse(&made[1].code).unwrap();
        assert_eq!(
            designs.claim(&other, 1_000).unwrap(),
            Err(ClaimRefused::Expired { expires_ns: 1_000 })
        );
        let unknown = DesignCode::parse("ZZZZZZ").unwrap();
        assert_eq!(
            designs.claim(&unknown, 1).unwrap(),
            Err(ClaimRefused::Unknown)
        );
        drop(designs);
        // Reopened: everything is still there.
        let designs = Designs::open(&storage).unwrap();
        let (name, list) = designs.group(group).unwrap().unwrap();
        assert_eq!((name.as_str(), list.len()), ("4e B", 2));
        assert_eq!(
            designs.by_order("ORD-000007").unwrap().unwrap().code,
            made[0].code
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
