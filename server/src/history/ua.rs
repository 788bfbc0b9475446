//! HistoryRead for tag variables (OPC UA Part 11): raw, at time, processed; and the
//! `Historizing` attribute and `HistoryRead` access bit of historized variables.
//!
//! Called by the gateway's node manager (opcua/nodes.rs) with a way to find a node's tag.

use std::sync::Arc;

use fabrique_adapters::ua::{date_time, timestamp, variant_of};
use fabrique_adapters::{DataType, TagCatalog, TagId, Timestamp};
use opcua::server::address_space::{AccessLevel, AddressSpace, NodeType};
use opcua::server::node_manager::HistoryNode;
use opcua::server::ContinuationPoint;
use opcua::types::status_code::StatusCodeValueType;
use opcua::types::{
    DataValue, DateTime, HistoryData, NodeId, ObjectId, ReadAtTimeDetails, ReadProcessedDetails,
    ReadRawModifiedDetails, StatusCode, TimestampsToReturn, Variant,
};

use super::aggregate::{self, Aggregate};
use super::codec::{ticks_of, Sample};
use super::Historian;

/// Set `Historizing` and the `HistoryRead` access bits on the variables of historized tags.
pub fn mark_historized<'a>(
    space: &mut AddressSpace,
    historian: &Historian,
    catalog: &TagCatalog,
    nodes: impl Iterator<Item = (TagId, &'a NodeId)>,
) -> usize {
    let mut marked = 0;
    for (tag, node) in nodes {
        if node.is_null() || !historian.historizes(catalog, tag) {
            continue;
        }
        if let Some(NodeType::Variable(variable)) = space.find_mut(node) {
            variable.set_historizing(true);
            variable.set_access_level(variable.access_level() | AccessLevel::HISTORY_READ);
            variable
                .set_user_access_level(variable.user_access_level() | AccessLevel::HISTORY_READ);
            marked += 1;
        }
    }
    marked
}

/// Run a history read (file reads, decoding) without stalling the other tasks of the
/// async worker thread it was called on.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Where a raw read stopped: the next call resumes after `skip` samples at `ticks`.
struct RawCursor {
    tag: TagId,
    ticks: i64,
    skip: usize,
}

fn to_ticks(t: &DateTime) -> Option<i64> {
    timestamp(t).map(ticks_of)
}

fn to_date_time(ticks: i64) -> DateTime {
    date_time(Timestamp::from_nanos(ticks.saturating_mul(100)))
}

fn stamped(mut value: DataValue, ticks: i64, wanted: TimestampsToReturn) -> DataValue {
    let t = to_date_time(ticks);
    match wanted {
        TimestampsToReturn::Source => value.source_timestamp = Some(t),
        TimestampsToReturn::Server => value.server_timestamp = Some(t),
        TimestampsToReturn::Both => {
            value.source_timestamp = Some(t);
            value.server_timestamp = Some(t);
        }
        _ => {}
    }
    value
}

fn sample_value(data_type: DataType, sample: &Sample, wanted: TimestampsToReturn) -> DataValue {
    let value = sample.value.as_ref().and_then(|v| variant_of(data_type, v));
    stamped(
        DataValue {
            value: Some(value.unwrap_or(Variant::Empty)),
            status: Some(StatusCode::from(sample.quality.0)),
            ..DataValue::null()
        },
        sample.ticks,
        wanted,
    )
}

#[cfg(test)]
pub fn sample_value_for_bench(data_type: DataType, sample: &Sample) -> DataValue {
    sample_value(data_type, sample, TimestampsToReturn::Source)
}

fn status_value(status: StatusCode, ticks: i64, wanted: TimestampsToReturn) -> DataValue {
    stamped(
        DataValue {
            value: None,
            status: Some(status),
            ..DataValue::null()
        },
        ticks,
        wanted,
    )
}

/// The checks every data read shares; the node's tag and type if it may be read.
fn tag_of(
    historian: &Historian,
    node: &mut HistoryNode,
    resolve: &dyn Fn(&NodeId) -> Option<TagId>,
) -> Option<(TagId, DataType)> {
    let catalog = historian.catalog();
    let found = resolve(node.node_id())
        .and_then(|tag| Some((tag, catalog.get(tag)?)))
        .filter(|(tag, _)| historian.historizes(&catalog, *tag));
    let Some((tag, entry)) = found else {
        node.set_status(StatusCode::BadHistoryOperationUnsupported);
        return None;
    };
    if !node.data_encoding().is_null() {
        node.set_status(StatusCode::BadDataEncodingUnsupported);
        return None;
    }
    if node.index_range().has_range() {
        node.set_status(StatusCode::BadIndexRangeNoData);
        return None;
    }
    Some((tag, entry.spec.data_type))
}

pub fn read_raw(
    historian: &Arc<Historian>,
    details: &ReadRawModifiedDetails,
    nodes: &mut [&mut &mut HistoryNode],
    wanted: TimestampsToReturn,
    resolve: &dyn Fn(&NodeId) -> Option<TagId>,
) {
    let fail = |nodes: &mut [&mut &mut HistoryNode], status| {
        for node in nodes.iter_mut() {
            node.set_status(status);
        }
    };
    if details.is_read_modified {
        // The historian keeps no modified values: nothing is ever updated after the fact.
        return fail(nodes, StatusCode::BadHistoryOperationUnsupported);
    }
    let (start, end) = (to_ticks(&details.start_time), to_ticks(&details.end_time));
    let per_call = match details.num_values_per_node {
        0 => historian.config.max_values_per_read,
        n => n.min(historian.config.max_values_per_read),
    } as usize;
    // Part 11 6.4.3: both ends, or one end and a number of values.
    let (from, to, forward) = match (start, end) {
        (None, None) => return fail(nodes, StatusCode::BadInvalidTimestampArgument),
        (Some(_), None) | (None, Some(_)) if details.num_values_per_node == 0 => {
            return fail(nodes, StatusCode::BadInvalidTimestampArgument)
        }
        (Some(s), None) => (s, i64::MAX, true),
        (None, Some(e)) => (i64::MIN, e, false),
        // The start time is in the range, the end time is not (it is the end bound's).
        (Some(s), Some(e)) if s < e => (s, e - 1, true),
        (Some(s), Some(e)) if s == e => (s, s, true),
        (Some(s), Some(e)) => (e + 1, s, false),
    };
    let bounds = details.return_bounds && start.is_some() && end.is_some();
    for node in nodes.iter_mut() {
        let Some((tag, data_type)) = tag_of(historian, node, resolve) else {
            continue;
        };
        let cursor = match node.continuation_point() {
            None => None,
            Some(cp) => match cp.get::<RawCursor>() {
                Some(c) if c.tag == tag => Some((c.ticks, c.skip)),
                _ => {
                    node.set_status(StatusCode::BadContinuationPointInvalid);
                    continue;
                }
            },
        };
        // The window still to read, the cursor's timestamp included (its first `skip`
        // samples were returned already).
        let (lo, hi) = match cursor {
            Some((t, _)) if forward => (t, to),
            Some((t, _)) => (from, t),
            None => (from, to),
        };
        let skip = cursor.map_or(0, |c| c.1);
        let mut samples = historian
            .store
            .read_near(tag, lo, hi, forward, per_call + skip + 1);
        if !forward {
            samples.reverse();
        }
        // Drop what the previous call returned at the cursor's time.
        let mut at_cursor = 0;
        samples.retain(|s| {
            if cursor.is_some_and(|(t, _)| s.ticks == t) && at_cursor < skip {
                at_cursor += 1;
                return false;
            }
            true
        });
        let mut values = Vec::with_capacity(samples.len().min(per_call) + 2);
        let first_call = cursor.is_none();
        if bounds && first_call {
            // The bounding value at the start: a sample exactly there is in `samples` already.
            let start = start.unwrap_or_default();
            let at_start = samples.first().is_some_and(|s| s.ticks == start);
            if !at_start {
                let bound = if forward {
                    historian.store.before(tag, start)
                } else {
                    historian.store.after(tag, start)
                };
                values.push(match bound {
                    Some(s) => sample_value(data_type, &s, wanted),
                    None => status_value(StatusCode::BadBoundNotFound, start, wanted),
                });
            }
        }
        let more = samples.len() > per_call;
        samples.truncate(per_call);
        values.extend(samples.iter().map(|s| sample_value(data_type, s, wanted)));
        if more {
            let last = samples.last().map_or(lo, |s| s.ticks);
            let same = samples.iter().rev().take_while(|s| s.ticks == last).count();
            let skip = if cursor.is_some_and(|(t, _)| t == last) {
                skip + same
            } else {
                same
            };
            node.set_next_continuation_point(Some(ContinuationPoint::new(Box::new(RawCursor {
                tag,
                ticks: last,
                skip,
            }))));
        } else if bounds {
            // The sample at the end time, or the first beyond it.
            let end = end.unwrap_or_default();
            let bound = if forward {
                historian.store.after(tag, end - 1)
            } else {
                historian.store.before(tag, end + 1)
            };
            values.push(match bound {
                Some(s) => sample_value(data_type, &s, wanted),
                None => status_value(StatusCode::BadBoundNotFound, end, wanted),
            });
        }
        node.set_result(HistoryData {
            data_values: Some(values),
        });
        node.set_status(StatusCode::Good);
    }
}

pub fn read_at_time(
    historian: &Arc<Historian>,
    details: &ReadAtTimeDetails,
    nodes: &mut [&mut &mut HistoryNode],
    wanted: TimestampsToReturn,
    resolve: &dyn Fn(&NodeId) -> Option<TagId>,
) {
    let times: Vec<Option<i64>> = details.req_times.iter().flatten().map(to_ticks).collect();
    let status = if times.is_empty() {
        Some(StatusCode::BadNothingToDo)
    } else if times.len() > historian.config.max_values_per_read as usize {
        Some(StatusCode::BadTooManyOperations)
    } else if times.iter().any(Option::is_none) {
        Some(StatusCode::BadInvalidTimestampArgument)
    } else {
        None
    };
    for node in nodes.iter_mut() {
        if let Some(status) = status {
            node.set_status(status);
            continue;
        }
        let Some((tag, data_type)) = tag_of(historian, node, resolve) else {
            continue;
        };
        if node.continuation_point().is_some() {
            node.set_status(StatusCode::BadContinuationPointInvalid);
            continue;
        }
        let values = times
            .iter()
            .flatten()
            .map(|&t| {
                let before = historian.store.read_near(tag, i64::MIN, t, false, 1).pop();
                match before {
                    Some(s) if s.ticks == t => sample_value(data_type, &s, wanted),
                    Some(s) => {
                        let after = historian.store.after(tag, t);
                        // Linear between two Good numbers, else the last value holds (stepped).
                        let linear = after.as_ref().and_then(|a| {
                            let (p, n) = (good_number(&s)?, good_number(a)?);
                            aggregate::interpolate(&[p, n], t)
                        });
                        let mut value = match linear {
                            Some(v) => DataValue {
                                value: Some(Variant::Double(v)),
                                status: Some(StatusCode::Good),
                                ..DataValue::null()
                            },
                            None => sample_value(data_type, &s, TimestampsToReturn::Neither),
                        };
                        let status = value.status.unwrap_or(StatusCode::Good);
                        value.status =
                            Some(status.set_value_type(StatusCodeValueType::Interpolated));
                        stamped(value, t, wanted)
                    }
                    None => status_value(StatusCode::BadNoData, t, wanted),
                }
            })
            .collect();
        node.set_result(HistoryData {
            data_values: Some(values),
        });
        node.set_status(StatusCode::Good);
    }
}

fn good_number(s: &Sample) -> Option<aggregate::Point> {
    if !s.quality.is_good() {
        return None;
    }
    Some((s.ticks, s.value.as_ref()?.as_f64()?))
}

/// What a processed read of `[from, to]` aggregates: the Good numeric samples of the range,
/// with one on each side (bounds for interpolation at its ends).
pub(super) fn processed_points(
    store: &super::store::Store,
    tag: TagId,
    from: i64,
    to: i64,
) -> Vec<aggregate::Point> {
    let mut points: Vec<aggregate::Point> = Vec::new();
    points.extend(store.before(tag, from).as_ref().and_then(good_number));
    points.extend(store.read_numbers(tag, from, to));
    points.extend(store.after(tag, to).as_ref().and_then(good_number));
    points
}

/// The aggregate functions a processed read serves.
const AGGREGATES: [(ObjectId, Aggregate); 7] = [
    (ObjectId::AggregateFunction_Average, Aggregate::Average),
    (ObjectId::AggregateFunction_Minimum, Aggregate::Minimum),
    (ObjectId::AggregateFunction_Maximum, Aggregate::Maximum),
    (ObjectId::AggregateFunction_Count, Aggregate::Count),
    (
        ObjectId::AggregateFunction_Interpolative,
        Aggregate::Interpolative,
    ),
    (
        ObjectId::AggregateFunction_TimeAverage,
        Aggregate::TimeAverage,
    ),
    (ObjectId::AggregateFunction_Total, Aggregate::Total),
];

/// What the Server object's `HistoryServerCapabilities` say (the vendored server's
/// `ServerBuilder::capabilities`): data and events history when the historian runs, read only
/// (nothing is inserted, replaced or deleted), with the aggregates above.
pub fn capabilities(historian: Option<&Historian>) -> opcua::server::ServerCapabilities {
    let mut capabilities = opcua::server::ServerCapabilities::default();
    if let Some(historian) = historian {
        let h = &mut capabilities.history;
        h.access_history_data = true;
        h.access_history_events = historian.events.is_some();
        h.max_return_data_values = historian.config.max_values_per_read;
        h.max_return_event_values = historian.config.max_values_per_read;
        h.aggregates = AGGREGATES.iter().map(|(id, _)| (*id).into()).collect();
    }
    capabilities
}

fn aggregate_of(id: &NodeId) -> Option<Aggregate> {
    AGGREGATES
        .into_iter()
        .find(|(object, _)| id == object)
        .map(|(_, a)| a)
}

pub fn read_processed(
    historian: &Arc<Historian>,
    details: &ReadProcessedDetails,
    nodes: &mut [&mut &mut HistoryNode],
    wanted: TimestampsToReturn,
    resolve: &dyn Fn(&NodeId) -> Option<TagId>,
) {
    let (start, end) = (to_ticks(&details.start_time), to_ticks(&details.end_time));
    let aggregates = details.aggregate_type.as_deref().unwrap_or_default();
    let interval = (details.processing_interval * 10_000.0) as i64; // ms → ticks
    let common = match (start, end) {
        _ if !(details.processing_interval.is_finite() && details.processing_interval >= 0.0) => {
            Err(StatusCode::BadInvalidArgument)
        }
        (Some(s), Some(e)) if s != e => Ok((s.min(e), s.max(e), e < s)),
        _ => Err(StatusCode::BadInvalidTimestampArgument),
    };
    let batch = nodes.len();
    for (i, node) in nodes.iter_mut().enumerate() {
        let (from, to, reverse) = match common {
            Ok(c) => c,
            Err(status) => {
                node.set_status(status);
                continue;
            }
        };
        // One aggregate per node, in request order; the server hands this node manager its
        // own nodes only, so a single aggregate (the common case) applies to all of them.
        let requested = if aggregates.len() == batch {
            aggregates.get(i)
        } else {
            aggregates.first()
        };
        let Some(aggregate) = requested.and_then(aggregate_of) else {
            node.set_status(StatusCode::BadAggregateNotSupported);
            continue;
        };
        let step = if interval == 0 { to - from } else { interval };
        let intervals = (to - from + step - 1) / step;
        if intervals > i64::from(historian.config.max_values_per_read) {
            node.set_status(StatusCode::BadTooManyOperations);
            continue;
        }
        let Some((tag, _)) = tag_of(historian, node, resolve) else {
            continue;
        };
        if node.continuation_point().is_some() {
            node.set_status(StatusCode::BadContinuationPointInvalid);
            continue;
        }
        // The samples of the range, with one on each side for interpolation at its ends.
        let store = &historian.store;
        let points = processed_points(store, tag, from, to);
        let value_type = if aggregate == Aggregate::Interpolative {
            StatusCodeValueType::Interpolated
        } else {
            StatusCodeValueType::Calculated
        };
        let results = aggregate::per_interval(aggregate, &points, from, to, step);
        let mut values: Vec<DataValue> = (0..intervals)
            .zip(results)
            .map(|(k, result)| {
                let lo = from + k * step;
                match result {
                    Some(v) => stamped(
                        DataValue {
                            value: Some(Variant::Double(v)),
                            status: Some(StatusCode::Good.set_value_type(value_type)),
                            ..DataValue::null()
                        },
                        lo,
                        wanted,
                    ),
                    None => status_value(StatusCode::BadNoData, lo, wanted),
                }
            })
            .collect();
        if reverse {
            values.reverse();
        }
        node.set_result(HistoryData {
            data_values: Some(values),
        });
        node.set_status(StatusCode::Good);
    }
}
