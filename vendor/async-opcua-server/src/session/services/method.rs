use std::sync::Arc;

use crate::{
    node_manager::{consume_results, DynNodeManager, MethodCall, NodeManagers, RequestContext},
    session::{
        controller::Response,
        message_handler::Request,
        services::{invoke_service_concurrently_mut, ServiceCb},
    },
};
use opcua_types::{CallRequest, CallResponse, ResponseHeader, StatusCode};
use tracing::debug_span;
use tracing_futures::Instrument;

pub(crate) async fn call(node_managers: NodeManagers, request: Request<CallRequest>) -> Response {
    let context = request.context();
    let method_calls = take_service_items!(
        request,
        request.request.methods_to_call,
        request.info.operational_limits.max_nodes_per_method_call
    );

    let mut calls: Vec<_> = method_calls
        .into_iter()
        .map(|c| MethodCall::new(c, request.request.request_header.return_diagnostics))
        .collect();

    struct MethodServiceCb;

    impl ServiceCb<MethodCall> for MethodServiceCb {
        async fn call(
            &self,
            items: &mut [&mut MethodCall],
            node_manager: &Arc<DynNodeManager>,
            context: RequestContext,
        ) {
            if let Err(e) = node_manager
                .call(&context, &mut *items)
                .instrument(debug_span!("Call", node_manager = %node_manager.name()))
                .await
            {
                for call in items {
                    call.set_status(e);
                }
            }
        }
    }

    invoke_service_concurrently_mut(
        context,
        &mut calls,
        &node_managers,
        MethodServiceCb,
        |call, node_manager| {
            let serves = if call.is_condition_refresh() {
                node_manager.serves_condition_refresh()
            } else {
                node_manager.owns_node(routing_node(call))
            };
            serves && call.status() == StatusCode::BadMethodInvalid
        },
    )
    .await;

    let (results, diagnostic_infos) =
        consume_results(calls, request.request.request_header.return_diagnostics);

    Response {
        message: CallResponse {
            response_header: ResponseHeader::new_good(request.request_handle),
            results,
            diagnostic_infos,
        }
        .into(),
        request_id: request.request_id,
    }
}

/// The node whose node manager serves `call`: the method's, except for the methods of
/// `ConditionType` and its subtypes (OPC 10000-9), which are declared once in the core
/// namespace and called on condition instances that other node managers own. Those go to
/// the node manager of the object they are called on (unless that object is in the core
/// namespace, e.g. ConditionRefresh on the Server's `ConditionType`).
fn routing_node(call: &MethodCall) -> &opcua_types::NodeId {
    if call.is_routed_by_object() {
        call.object_id()
    } else {
        call.method_id()
    }
}
