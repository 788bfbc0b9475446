//! HistoryReadEvents (OPC 10000-11, 6.4.2) over the stored events (events.rs).
//!
//! A stored event is rebuilt as the very event the live path reported (same type, fields and
//! EventId), then the request's EventFilter is applied by async-opcua, as for a live
//! subscription: the select clauses and the where clause subset it supports. A select clause
//! that async-opcua refuses is answered with a null field in its place (the live path drops
//! it, which shifts the fields after it).

use opcua::nodes::{Event, ParsedEventFilter, TypeTree};
use opcua::server::node_manager::HistoryNode;
use opcua::server::ContinuationPoint;
use opcua::types::{
    DateTime, HistoryEvent, HistoryEventFieldList, NodeId, ReadEventDetails, StatusCode, Variant,
};

use super::events::{EventStore, StoredEvent};

/// Where a read stopped: the next call resumes after `skip` events at `time`.
struct EventCursor {
    node: NodeId,
    time: i64,
    skip: usize,
}

fn nanos(t: &DateTime) -> Option<i64> {
    if t.is_null() {
        return None;
    }
    t.as_chrono().timestamp_nanos_opt()
}

/// What the gateway needs to answer: the stored events, how to rebuild one, which notifiers
/// report it.
pub struct EventSource<'a> {
    pub store: &'a EventStore,
    pub build: &'a dyn Fn(&StoredEvent) -> Box<dyn Event>,
    /// Whether the event is reported on the notifier `node`.
    pub reported_on: &'a dyn Fn(&NodeId, &StoredEvent) -> bool,
    /// Events per node in one answer at most (`history.max_values_per_read`).
    pub max_per_read: usize,
}

pub fn read_events(
    source: &EventSource<'_>,
    details: &ReadEventDetails,
    nodes: &mut [&mut &mut HistoryNode],
    type_tree: &dyn TypeTree,
) {
    let fail = |nodes: &mut [&mut &mut HistoryNode], status| {
        for node in nodes.iter_mut() {
            node.set_status(status);
        }
    };
    let (start, end) = (nanos(&details.start_time), nanos(&details.end_time));
    let per_call = match details.num_values_per_node {
        0 => source.max_per_read,
        n => (n as usize).min(source.max_per_read),
    };
    // Part 11, 6.4.2.1: both ends, or one end and a number of events.
    let (from, to, forward) = match (start, end) {
        (None, None) => return fail(nodes, StatusCode::BadInvalidTimestampArgument),
        (Some(_), None) | (None, Some(_)) if details.num_values_per_node == 0 => {
            return fail(nodes, StatusCode::BadInvalidTimestampArgument)
        }
        (Some(s), None) => (s, i64::MAX, true),
        (None, Some(e)) => (i64::MIN, e, false),
        (Some(s), Some(e)) if s < e => (s, e - 1, true),
        (Some(s), Some(e)) if s == e => (s, s, true),
        // Reversed: newest first, from the start time down to (not including) the end time.
        (Some(s), Some(e)) => (e + 1, s, false),
    };
    let (result, filter) = ParsedEventFilter::new(details.filter.clone(), type_tree);
    let filter = match filter {
        Ok(filter) => filter,
        Err(status) => return fail(nodes, status),
    };
    let selected = result.select_clause_results.unwrap_or_default();
    if selected.is_empty() || selected.iter().all(|s| !s.is_good()) {
        // Nothing to return for any event: Part 4, 7.22.3 (EventFilter).
        return fail(nodes, StatusCode::BadEventFilterInvalid);
    }
    for node in nodes.iter_mut() {
        let node_id = node.node_id().clone();
        let cursor = match node.continuation_point() {
            None => None,
            Some(cp) => match cp.get::<EventCursor>() {
                Some(c) if c.node == node_id => Some((c.time, c.skip)),
                _ => {
                    node.set_status(StatusCode::BadContinuationPointInvalid);
                    continue;
                }
            },
        };
        let (lo, hi) = match cursor {
            Some((t, _)) if forward => (t, to),
            Some((t, _)) => (from, t),
            None => (from, to),
        };
        let mut events = source.store.read(lo, hi);
        if !forward {
            events.reverse();
        }
        let skip = cursor.map_or(0, |c| c.1);
        let mut at_cursor = 0;
        let mut out: Vec<HistoryEventFieldList> = Vec::new();
        let mut last = None;
        let mut more = false;
        for stored in &events {
            if !(source.reported_on)(&node_id, stored) {
                continue;
            }
            // What the previous call returned at the cursor's time (filtered or not).
            if cursor.is_some_and(|(t, _)| stored.time == t) && at_cursor < skip {
                at_cursor += 1;
                continue;
            }
            if out.len() == per_call {
                more = true;
                break;
            }
            let event = (source.build)(stored);
            let same_time = last.is_some_and(|(t, _)| t == stored.time);
            let at_time = if same_time {
                last.map_or(0, |(_, n)| n) + 1
            } else {
                1
            };
            last = Some((stored.time, at_time));
            let Some(fields) = filter.evaluate(&*event, 0, type_tree) else {
                continue;
            };
            out.push(HistoryEventFieldList {
                event_fields: Some(with_nulls(
                    &selected,
                    fields.event_fields.unwrap_or_default(),
                )),
            });
        }
        if more {
            // Resume after what was looked at, at the last time seen (events filtered out
            // at that time count too: they are skipped again).
            let (time, n) = last.unwrap_or((lo, 0));
            let skip = if cursor.is_some_and(|(t, _)| t == time) {
                skip + n
            } else {
                n
            };
            node.set_next_continuation_point(Some(ContinuationPoint::new(Box::new(EventCursor {
                node: node_id.clone(),
                time,
                skip,
            }))));
        }
        node.set_result(HistoryEvent { events: Some(out) });
        node.set_status(StatusCode::Good);
    }
}

/// The fields of the valid select clauses, with a null where a clause was refused, so the
/// i-th field answers the i-th clause.
fn with_nulls(selected: &[StatusCode], fields: Vec<Variant>) -> Vec<Variant> {
    let mut fields = fields.into_iter();
    selected
        .iter()
        .map(|s| {
            if s.is_good() {
                fields.next().unwrap_or_default()
            } else {
                Variant::Empty
            }
        })
        .collect()
}
