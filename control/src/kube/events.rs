//! Kubernetes Events meshd writes about the custom resources it skips as
//! invalid: core/v1 Events (`reason: Invalid`, `type: Warning`, the
//! validation error with its field path as the message), which
//! `kubectl describe <kind> <name>` lists under "Events" and `kubectl get
//! events` shows. Only the leader writes them, once per status change (see
//! [`super::crds::KubeStore::spawn_status_writer`]).

use ::kube::Client;
use ::kube::api::{Api, DynamicObject, PostParams};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use mesh_model::Kind;

/// The component Events are reported by.
pub const COMPONENT: &str = "meshd";

/// The reason of the Event about an invalid object.
pub const REASON_INVALID: &str = "Invalid";

/// The API server refuses longer Event messages (events.k8s.io limits
/// `note` to 1 kB); longer validation errors are cut.
const MAX_MESSAGE: usize = 1024;

/// The reference to `obj` (a custom resource of `kind`) an Event names as
/// its `involvedObject`.
pub fn reference(kind: Kind, obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(kind.preferred_api_version()),
        kind: Some(kind.as_str().to_string()),
        namespace: obj.metadata.namespace.clone(),
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The Warning Event saying `object` was skipped as invalid, at `now`.
pub fn invalid(object: &ObjectReference, message: &str, now: Timestamp) -> Event {
    let name = object.name.clone().unwrap_or_default();
    let nanos = now.as_nanosecond();
    let mut message = message.to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    Event {
        metadata: ObjectMeta {
            // client-go's naming: the object's name and the time in hex.
            name: Some(format!("{name}.{nanos:x}")),
            namespace: object.namespace.clone(),
            ..ObjectMeta::default()
        },
        involved_object: object.clone(),
        reason: Some(REASON_INVALID.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.into()),
        ..Event::default()
    }
}

/// Creates `event` in its object's namespace; failures are logged (an
/// Event is advisory: the object's status carries the same message).
pub async fn post(client: &Client, event: &Event) {
    let ns = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let object = event.involved_object.name.as_deref().unwrap_or_default();
    match api.create(&PostParams::default(), event).await {
        Ok(_) => tracing::debug!(namespace = %ns, object, "event written"),
        Err(error) => {
            tracing::warn!(namespace = %ns, object, %error, "writing an Event failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let object = ObjectReference {
            name: Some("vs".into()),
            namespace: Some("shop".into()),
            ..ObjectReference::default()
        };
        let event = invalid(&object, &"é".repeat(800), Timestamp::UNIX_EPOCH);
        let message = event.message.unwrap_or_default();
        assert!(message.len() <= MAX_MESSAGE, "{}", message.len());
        assert!(message.ends_with("..."));
        assert_eq!(event.metadata.name.as_deref(), Some("vs.0"));
    }
}
