//! A condition's state as an OPC UA event of its condition type (`OffNormalAlarmType`).
//!
//! Written by hand rather than with async-opcua's generated `OffNormalAlarmType`, whose
//! `Comment` and `LastSeverity` are typed `ExtensionObject` and whose two-state variables
//! carry no text. The fields are found by browse path, whatever the select clause's type
//! (a client selects `AckedState/Id` through `BaseEventType` or `AcknowledgeableConditionType`
//! alike); the empty path with attribute `NodeId` is the ConditionId (Part 9, 5.5.2).

use opcua::nodes::{BaseEventType, Event, EventField};
use opcua::types::{
    AttributeId, DateTime, LocalizedText, NodeId, NumericRange, ObjectTypeId, QualifiedName,
    StatusCode, UAString, Variant,
};

use super::ConditionState;

pub struct ConditionEvent {
    pub base: BaseEventType,
    /// The condition instance's NodeId (the ConditionId).
    pub condition_id: NodeId,
    pub state: ConditionState,
    pub time: DateTime,
}

fn two_state(value: bool, true_text: &str, false_text: &str, rest: &[QualifiedName]) -> Variant {
    match rest.first().map(|q| q.name.as_ref()) {
        None => Variant::from(LocalizedText::new(
            "en",
            if value { true_text } else { false_text },
        )),
        Some("Id") => Variant::from(value),
        Some("TrueState") => Variant::from(LocalizedText::new("en", true_text)),
        Some("FalseState") => Variant::from(LocalizedText::new("en", false_text)),
        _ => Variant::Empty,
    }
}

impl EventField for ConditionEvent {
    fn get_value(
        &self,
        attribute_id: AttributeId,
        index_range: &NumericRange,
        browse_path: &[QualifiedName],
    ) -> Variant {
        let Some(first) = browse_path.first() else {
            return if attribute_id == AttributeId::NodeId {
                Variant::from(self.condition_id.clone())
            } else {
                Variant::Empty
            };
        };
        if attribute_id != AttributeId::Value {
            return self.base.get_value(attribute_id, index_range, browse_path);
        }
        let s = &self.state;
        let rest = &browse_path[1..];
        match first.name.as_ref() {
            "ConditionName" => Variant::from(UAString::from(s.name)),
            "ConditionClassId" => {
                Variant::from(NodeId::from(ObjectTypeId::SystemConditionClassType))
            }
            "ConditionClassName" => Variant::from(LocalizedText::new("en", "System")),
            "BranchId" => Variant::from(NodeId::null()),
            "Retain" => Variant::from(s.retain()),
            "EnabledState" => two_state(s.enabled, "Enabled", "Disabled", rest),
            "ActiveState" => two_state(s.active, "Active", "Inactive", rest),
            "AckedState" => two_state(s.acked, "Acknowledged", "Unacknowledged", rest),
            "ConfirmedState" => two_state(s.confirmed, "Confirmed", "Unconfirmed", rest),
            "Comment" => match rest.first().map(|q| q.name.as_ref()) {
                None => Variant::from(LocalizedText::new("en", &s.comment)),
                Some("SourceTimestamp") => Variant::from(self.time),
                _ => Variant::Empty,
            },
            "LastSeverity" => Variant::from(s.severity),
            "Quality" => Variant::from(StatusCode::Good),
            "ClientUserId" => Variant::from(UAString::null()),
            "SuppressedOrShelved" => Variant::from(false),
            "InputNode" => Variant::from(NodeId::null()),
            "NormalState" => Variant::from(NodeId::null()),
            _ => self.base.get_value(attribute_id, index_range, browse_path),
        }
    }
}

impl Event for ConditionEvent {
    fn get_field(
        &self,
        _type_definition_id: &NodeId,
        attribute_id: AttributeId,
        index_range: &NumericRange,
        browse_path: &[QualifiedName],
    ) -> Variant {
        self.get_value(attribute_id, index_range, browse_path)
    }

    fn time(&self) -> &DateTime {
        self.base.time()
    }

    fn event_type_id(&self) -> &NodeId {
        self.base.event_type_id()
    }
}

/// The event reporting `state`: `OffNormalAlarmType`, its source `source_node` (the device
/// object), its SourceName the device path, its ConditionId `condition_id`.
pub fn condition_event(
    source_node: NodeId,
    condition_id: NodeId,
    state: ConditionState,
) -> ConditionEvent {
    let time = fabrique_adapters::ua::date_time(state.time);
    let base = BaseEventType::new(
        ObjectTypeId::OffNormalAlarmType,
        opcua::types::ByteString::from(state.event_id.clone()),
        state.message.as_str(),
        time,
    )
    .set_source_node(source_node)
    .set_source_name(UAString::from(state.source.as_str()))
    .set_receive_time(DateTime::now())
    .set_severity(state.severity);
    ConditionEvent {
        base,
        condition_id,
        state,
        time,
    }
}
