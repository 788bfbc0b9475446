//! The condition methods a client calls on a condition instance (Part 9, 5.5.4, 5.7.3 and
//! 5.7.4), and ConditionRefresh on the `ConditionType` object (refresh.rs).
//!
//! They belong to the core namespace (`AcknowledgeableConditionType_Acknowledge` is ns=0;
//! i=9111), so async-opcua routes them to its core node manager; the vendored server routes
//! them by the called object instead (vendor/async-opcua-server/PATCHES.md, 3 and 5), which
//! brings them to the gateway's node manager, then here.

use opcua::server::node_manager::{MethodCall, RequestContext};
use opcua::types::{MethodId, NodeId, StatusCode, Variant};

use super::{Alarms, ConditionState};

/// Whether `method` is a condition method served here.
pub fn is_condition_method(method: &NodeId) -> bool {
    *method == NodeId::from(MethodId::AcknowledgeableConditionType_Acknowledge)
        || *method == NodeId::from(MethodId::AcknowledgeableConditionType_Confirm)
        || *method == NodeId::from(MethodId::ConditionType_AddComment)
        || *method == NodeId::from(MethodId::ConditionType_Enable)
        || *method == NodeId::from(MethodId::ConditionType_Disable)
        || super::refresh::is_refresh(method)
}

/// Serve a condition method `call` of the session `context`. `may_acknowledge`: the session's
/// role allows changing a condition (operators and admins). A change is answered once it is
/// on disk, and reported (through `Alarms::publish`) as an event.
pub async fn serve(
    alarms: &Alarms,
    ns: u16,
    context: &RequestContext,
    may_acknowledge: bool,
    call: &mut MethodCall,
) {
    if super::refresh::is_refresh(call.method_id()) {
        super::refresh::call(alarms, ns, context, call);
        return;
    }
    let condition = crate::opcua::events::condition_of(ns, call.object_id());
    if self::call(alarms, condition, may_acknowledge, call).is_some() {
        alarms.durable().await;
    }
}

/// Serve `call` of a condition method (Acknowledge, Confirm, AddComment: `EventId, Comment`;
/// Enable, Disable: no argument) on the condition (`source`, `name`). Returns the condition's
/// new state when it changed.
pub fn call(
    alarms: &Alarms,
    condition: Option<(String, String)>,
    may_acknowledge: bool,
    call: &mut MethodCall,
) -> Option<ConditionState> {
    let Some((source, name)) = condition else {
        call.set_status(StatusCode::BadNodeIdUnknown);
        return None;
    };
    if !may_acknowledge {
        call.set_status(StatusCode::BadUserAccessDenied);
        return None;
    }
    let now = fabrique_adapters::Timestamp::now();
    let method = call.method_id().clone();
    let enable = method == NodeId::from(MethodId::ConditionType_Enable);
    if enable || method == NodeId::from(MethodId::ConditionType_Disable) {
        if !call.arguments().is_empty() {
            call.set_status(StatusCode::BadTooManyArguments);
            return None;
        }
        return finish(
            call,
            &source,
            &name,
            alarms.set_enabled(&source, &name, enable, now),
        );
    }
    let (event_id, comment) = match call.arguments() {
        [Variant::ByteString(id), Variant::LocalizedText(comment)] => {
            (id.as_ref().to_vec(), comment.text.as_ref().to_owned())
        }
        [Variant::ByteString(id), Variant::Empty] => (id.as_ref().to_vec(), String::new()),
        [_, _] => {
            call.set_status(StatusCode::BadTypeMismatch);
            return None;
        }
        [_, _, _, ..] => {
            call.set_status(StatusCode::BadTooManyArguments);
            return None;
        }
        _ => {
            call.set_status(StatusCode::BadArgumentsMissing);
            return None;
        }
    };
    let changed = if method == NodeId::from(MethodId::ConditionType_AddComment) {
        alarms.add_comment(&source, &name, &event_id, &comment, now)
    } else if method == NodeId::from(MethodId::AcknowledgeableConditionType_Confirm) {
        alarms.confirm(&source, &name, &event_id, &comment, now)
    } else {
        alarms.acknowledge(&source, &name, &event_id, &comment, now)
    };
    finish(call, &source, &name, changed)
}

fn finish(
    call: &mut MethodCall,
    source: &str,
    name: &str,
    changed: Result<ConditionState, super::Refused>,
) -> Option<ConditionState> {
    match changed {
        Ok(state) => {
            call.set_status(StatusCode::Good);
            Some(state)
        }
        Err(refused) => {
            tracing::info!(%source, %name, ?refused, "condition method refused");
            call.set_status(refused.status());
            None
        }
    }
}
