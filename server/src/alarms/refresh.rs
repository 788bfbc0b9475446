//! ConditionRefresh and ConditionRefresh2 (Part 9, 5.5.7): replay the retained conditions to
//! one subscription (or one of its monitored items), between a `RefreshStartEvent` and a
//! `RefreshEndEvent`. The calls are on the core `ConditionType` object; the vendored server
//! hands them to the gateway's node manager (vendor/async-opcua-server/PATCHES.md, 5).

use opcua::nodes::{BaseEventType, Event};
use opcua::server::node_manager::{MethodCall, RequestContext};
use opcua::types::{
    AttributeId, DateTime, MethodId, NodeId, ObjectId, ObjectTypeId, StatusCode, UAString, Variant,
};

use super::Alarms;
use crate::opcua::events::{condition_event, event_id, notifiers};

/// Whether `method` is ConditionRefresh or ConditionRefresh2.
pub fn is_refresh(method: &NodeId) -> bool {
    *method == NodeId::from(MethodId::ConditionType_ConditionRefresh)
        || *method == NodeId::from(MethodId::ConditionType_ConditionRefresh2)
}

/// The subscription (and, for ConditionRefresh2, the monitored item) named by the call.
fn arguments(call: &MethodCall) -> Result<(u32, Option<u32>), StatusCode> {
    let two = *call.method_id() == NodeId::from(MethodId::ConditionType_ConditionRefresh2);
    let wanted = if two { 2 } else { 1 };
    let args = call.arguments();
    if args.len() < wanted {
        return Err(StatusCode::BadArgumentsMissing);
    }
    if args.len() > wanted {
        return Err(StatusCode::BadTooManyArguments);
    }
    let id = |v: &Variant| match v {
        Variant::UInt32(n) => Ok(*n),
        _ => Err(StatusCode::BadTypeMismatch),
    };
    let subscription = id(&args[0])?;
    let item = if two { Some(id(&args[1])?) } else { None };
    Ok((subscription, item))
}

fn marker(type_id: ObjectTypeId, message: &str) -> BaseEventType {
    let now = DateTime::now();
    BaseEventType::new(type_id, event_id(), message, now)
        .set_source_node(ObjectId::Server.into())
        .set_source_name(UAString::from("Server"))
        .set_receive_time(now)
        .set_severity(100)
}

/// Serve ConditionRefresh(SubscriptionId) or ConditionRefresh2(SubscriptionId,
/// MonitoredItemId) for the calling session. Every role may refresh (it changes nothing).
pub fn call(alarms: &Alarms, ns: u16, context: &RequestContext, call: &mut MethodCall) {
    let status = match refresh(alarms, ns, context, call) {
        Ok(()) => StatusCode::Good,
        Err(status) => {
            tracing::info!(%status, "condition refresh refused");
            status
        }
    };
    call.set_status(status);
}

fn refresh(
    alarms: &Alarms,
    ns: u16,
    context: &RequestContext,
    call: &MethodCall,
) -> Result<(), StatusCode> {
    let (subscription_id, item_id) = arguments(call)?;
    // Only the caller's own subscriptions: another session's id is as unknown as a made-up one.
    let subscriptions = context
        .subscriptions
        .get_session_subscriptions(context.session_id)
        .ok_or(StatusCode::BadSubscriptionIdInvalid)?;
    let mut subscriptions = subscriptions.lock();
    let subscription = subscriptions
        .get_mut(subscription_id)
        .ok_or(StatusCode::BadSubscriptionIdInvalid)?;
    // The event monitored items to refresh, with the notifier each watches.
    let items: Vec<(u32, NodeId)> = subscription
        .items()
        .filter(|item| item.item_to_monitor().attribute_id == AttributeId::EventNotifier)
        .filter(|item| item_id.is_none_or(|id| id == item.id()))
        .map(|item| (item.id(), item.item_to_monitor().node_id.clone()))
        .collect();
    if let Some(id) = item_id {
        if items.is_empty() {
            return Err(StatusCode::BadMonitoredItemIdInvalid);
        }
        tracing::debug!(subscription_id, id, "ConditionRefresh2");
    }
    let type_tree = context.get_type_tree_for_user();
    let start = marker(
        ObjectTypeId::RefreshStartEventType,
        "ConditionRefresh start",
    );
    let end = marker(ObjectTypeId::RefreshEndEventType, "ConditionRefresh end");
    let server: NodeId = ObjectId::Server.into();
    for (id, _) in &items {
        subscription.notify_event(id, &start as &dyn Event, type_tree.get());
    }
    for state in alarms.retained() {
        let targets = notifiers(ns, &state.source);
        // The condition's last event again, its EventId too: a client acknowledges with it.
        let event = condition_event(ns, state);
        for (id, notifier) in &items {
            if *notifier == server || targets.contains(notifier) {
                subscription.notify_event(id, &event as &dyn Event, type_tree.get());
            }
        }
    }
    for (id, _) in &items {
        subscription.notify_event(id, &end as &dyn Event, type_tree.get());
    }
    Ok(())
}
