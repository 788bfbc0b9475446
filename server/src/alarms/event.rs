//! A condition's state as an OPC UA event of its condition type (`OffNormalAlarmType`,
//! `ExclusiveLimitAlarmType`).
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

use super::{ConditionKind, ConditionState, LimitLevel};

/// The state of `ExclusiveLimitStateMachineType` a level is (`LimitState/CurrentState/Id`).
fn level_state(level: LimitLevel) -> NodeId {
    use opcua::types::ObjectId;
    NodeId::from(match level {
        LimitLevel::HighHigh => ObjectId::ExclusiveLimitStateMachineType_HighHigh,
        LimitLevel::High => ObjectId::ExclusiveLimitStateMachineType_High,
        LimitLevel::Low => ObjectId::ExclusiveLimitStateMachineType_Low,
        LimitLevel::LowLow => ObjectId::ExclusiveLimitStateMachineType_LowLow,
    })
}

/// The fields only a limit alarm has: `LimitState` and the four limits.
fn limit_field(kind: &ConditionKind, name: &str, rest: &[QualifiedName]) -> Option<Variant> {
    let ConditionKind::ExclusiveLimit { level, limits } = kind else {
        return None;
    };
    let limit = |l: Option<f64>| Some(l.map_or(Variant::Empty, Variant::from));
    match name {
        "HighHighLimit" => limit(limits.high_high),
        "HighLimit" => limit(limits.high),
        "LowLimit" => limit(limits.low),
        "LowLowLimit" => limit(limits.low_low),
        "LimitState" => Some(match rest.first().map(|q| q.name.as_ref()) {
            Some("CurrentState") => match (rest.get(1).map(|q| q.name.as_ref()), level) {
                (None, Some(level)) => Variant::from(LocalizedText::new("en", level.name())),
                (Some("Id"), Some(level)) => Variant::from(level_state(*level)),
                _ => Variant::Empty,
            },
            _ => Variant::Empty,
        }),
        _ => None,
    }
}

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
        if let Some(value) = limit_field(&s.kind, first.name.as_ref(), rest) {
            return value;
        }
        match first.name.as_ref() {
            "ConditionName" => Variant::from(UAString::from(s.name)),
            "ConditionClassId" => Variant::from(NodeId::from(match s.kind {
                ConditionKind::OffNormal => ObjectTypeId::SystemConditionClassType,
                ConditionKind::ExclusiveLimit { .. } => ObjectTypeId::ProcessConditionClassType,
            })),
            "ConditionClassName" => Variant::from(LocalizedText::new(
                "en",
                match s.kind {
                    ConditionKind::OffNormal => "System",
                    ConditionKind::ExclusiveLimit { .. } => "Process",
                },
            )),
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

/// The event reporting `state`: of its condition type, its source `source_node` (the device
/// or tag), its SourceName the source's path, its ConditionId `condition_id`.
pub fn condition_event(
    source_node: NodeId,
    condition_id: NodeId,
    state: ConditionState,
) -> ConditionEvent {
    let time = fabrique_adapters::ua::date_time(state.time);
    let event_type = match state.kind {
        ConditionKind::OffNormal => ObjectTypeId::OffNormalAlarmType,
        ConditionKind::ExclusiveLimit { .. } => ObjectTypeId::ExclusiveLimitAlarmType,
    };
    let base = BaseEventType::new(
        event_type,
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
