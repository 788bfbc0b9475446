//! The order history in SQLite (`<storage.data_dir>/orders.sqlite`): loaded whole at start,
//! then written in one transaction per burst of bus changes.
//!
//! Times are integer microseconds since the Unix epoch (UTC), so figures recomputed from the
//! file are exactly the ones the gateway published.

use rusqlite::{params, Connection, OptionalExtension};

use super::history::{LineState, OrderRecord, OrderState, Visit};
use fabrique_adapters::line::STEP_COUNT;

pub const DATABASE_FILE: &str = "orders.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    row          INTEGER PRIMARY KEY,
    id           TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    stop         TEXT    NOT NULL,
    submitted_at INTEGER,
    completed_at INTEGER,
    state        TEXT    NOT NULL,
    verdict      TEXT
);
CREATE INDEX IF NOT EXISTS orders_by_id ON orders (id);
CREATE TABLE IF NOT EXISTS order_steps (
    order_row  INTEGER NOT NULL REFERENCES orders (row),
    step       INTEGER NOT NULL,
    entered_at INTEGER NOT NULL,
    left_at    INTEGER,
    PRIMARY KEY (order_row, step)
);
CREATE TABLE IF NOT EXISTS line_states (
    at      INTEGER NOT NULL,
    running INTEGER NOT NULL
);
";

pub fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(SCHEMA)
}

fn verdict_text(verdict: Option<bool>) -> Option<&'static str> {
    verdict.map(|ok| if ok { "OK" } else { "NOK" })
}

/// Write changed orders (whole records, steps included) and new line states, atomically.
pub fn save(
    db: &mut Connection,
    orders: &[&OrderRecord],
    line_states: &[LineState],
) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    {
        let mut order_stmt = tx.prepare_cached(
            "INSERT INTO orders (row, id, model, text, stop, submitted_at, completed_at, state, verdict)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (row) DO UPDATE SET model = ?3, text = ?4, submitted_at = ?6,
                 completed_at = ?7, state = ?8, verdict = ?9",
        )?;
        let mut step_stmt = tx.prepare_cached(
            "INSERT INTO order_steps (order_row, step, entered_at, left_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (order_row, step) DO UPDATE SET entered_at = ?3, left_at = ?4",
        )?;
        for order in orders {
            order_stmt.execute(params![
                order.row,
                order.id,
                order.model,
                order.text,
                order.stop,
                order.submitted_at,
                order.completed_at,
                order.state.as_str(),
                verdict_text(order.verdict),
            ])?;
            for (k, visit) in order.steps.iter().enumerate() {
                if let Some((entered, left)) = visit {
                    step_stmt.execute(params![order.row, k as i64 + 1, entered, left])?;
                }
            }
        }
        let mut state_stmt =
            tx.prepare_cached("INSERT INTO line_states (at, running) VALUES (?1, ?2)")?;
        for state in line_states {
            state_stmt.execute(params![state.at, state.running])?;
        }
    }
    tx.commit()
}

fn order_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRecord> {
    let state: String = row.get(7)?;
    let verdict: Option<String> = row.get(8)?;
    Ok(OrderRecord {
        row: row.get(0)?,
        id: row.get(1)?,
        model: row.get(2)?,
        text: row.get(3)?,
        stop: row.get(4)?,
        submitted_at: row.get(5)?,
        completed_at: row.get(6)?,
        state: OrderState::parse(&state).unwrap_or(OrderState::Lost),
        verdict: verdict.map(|v| v == "OK"),
        steps: [None; STEP_COUNT],
    })
}

const ORDER_COLUMNS: &str =
    "row, id, model, text, stop, submitted_at, completed_at, state, verdict";

/// Everything recorded, orders by row, line states by time.
pub fn load(db: &Connection) -> rusqlite::Result<(Vec<OrderRecord>, Vec<LineState>)> {
    let mut orders = db
        .prepare(&format!("SELECT {ORDER_COLUMNS} FROM orders ORDER BY row"))?
        .query_map([], order_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let index: std::collections::HashMap<i64, usize> =
        orders.iter().enumerate().map(|(i, o)| (o.row, i)).collect();
    let mut steps = db.prepare("SELECT order_row, step, entered_at, left_at FROM order_steps")?;
    let mut rows = steps.query([])?;
    while let Some(row) = rows.next()? {
        let (order_row, step, entered, left): (i64, i64, i64, Option<i64>) =
            (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
        let slot = usize::try_from(step - 1).ok().filter(|k| *k < STEP_COUNT);
        if let (Some(&i), Some(k)) = (index.get(&order_row), slot) {
            orders[i].steps[k] = Some((entered, left));
        }
    }
    let line_states = db
        .prepare("SELECT at, running FROM line_states ORDER BY at, rowid")?
        .query_map([], |row| {
            Ok(LineState {
                at: row.get(0)?,
                running: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((orders, line_states))
}

/// The latest order recorded under `id`, with its steps.
pub fn find(db: &Connection, id: &str) -> rusqlite::Result<Option<OrderRecord>> {
    let order = db
        .query_row(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1 ORDER BY row DESC LIMIT 1"),
            [id],
            order_from_row,
        )
        .optional()?;
    let Some(mut order) = order else {
        return Ok(None);
    };
    let mut steps =
        db.prepare("SELECT step, entered_at, left_at FROM order_steps WHERE order_row = ?1")?;
    let mut rows = steps.query([order.row])?;
    while let Some(row) = rows.next()? {
        let step: i64 = row.get(0)?;
        let visit: Visit = Some((row.get(1)?, row.get(2)?));
        if let Some(k) = usize::try_from(step - 1).ok().filter(|k| *k < STEP_COUNT) {
            order.steps[k] = visit;
        }
    }
    Ok(Some(order))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_is_loaded_back_and_updates_replace() {
        let mut db = Connection::open_in_memory().unwrap();
        create_schema(&db).unwrap();
        let mut order = OrderRecord::new(1, "ORD-000001".into(), "Lens".into());
        order.model = "Wave".into();
        order.submitted_at = Some(10);
        order.steps[0] = Some((11, None));
        save(
            &mut db,
            &[&order],
            &[LineState {
                at: 1,
                running: true,
            }],
        )
        .unwrap();
        order.steps[0] = Some((11, Some(20)));
        order.state = OrderState::Delivered;
        order.verdict = Some(true);
        order.completed_at = Some(99);
        save(&mut db, &[&order], &[]).unwrap();
        let (orders, states) = load(&db).unwrap();
        assert_eq!(orders, vec![order.clone()]);
        assert_eq!(
            states,
            vec![LineState {
                at: 1,
                running: true
            }]
        );
        assert_eq!(find(&db, "ORD-000001").unwrap(), Some(order));
        assert_eq!(find(&db, "ORD-999999").unwrap(), None);
    }
}
