//! meshd's config source on Kubernetes against a scripted API server:
//! the initial list (buffered, invalid objects skipped), a watch stream
//! with ADDED/MODIFIED/BOOKMARK, the resumed watch from the bookmark, a
//! `410 Gone` that forces a re-list (objects gone meanwhile are deleted),
//! and a CRD that is not installed.

mod kube_support;

use std::time::Duration;

use http::Method;
use kube_support::{Reply, answer, event, list, next, pair, status};
use mesh_control::kube::KubeStore;
use mesh_control::store::{ConfigStore, EventType, StoreError};
use mesh_model::Kind;
use serde_json::{Value, json};

const PATH: &str = "/apis/networking.istio.io/v1/virtualservices";

/// A VirtualService as the API server returns it (server-set metadata,
/// managed fields and kubectl's annotation included).
fn vs(name: &str, rv: &str, generation: i64, hosts: &[&str], weight: u32) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": format!("0b8d7c1e-{name}"),
            "resourceVersion": rv,
            "generation": generation,
            "creationTimestamp": "2026-11-24T10:00:00Z",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"networking.istio.io/v1\"}\n"
            },
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "networking.istio.io/v1",
                "time": "2026-11-24T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {".": {}, "f:hosts": {}}}
            }]
        },
        "spec": {
            "hosts": hosts,
            "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": weight},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 100 - weight}
            ]}]
        }
    })
}

fn assert_list(seen: &kube_support::Seen) {
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, PATH);
    assert!(!seen.is_watch(), "{seen:?}");
    assert_eq!(seen.q("limit"), Some("500"), "{seen:?}");
}

fn assert_watch(seen: &kube_support::Seen, from: &str) {
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.path, PATH);
    assert!(seen.is_watch(), "{seen:?}");
    assert_eq!(seen.q("resourceVersion"), Some(from), "{seen:?}");
    assert_eq!(seen.q("allowWatchBookmarks"), Some("true"), "{seen:?}");
    assert!(seen.q("timeoutSeconds").is_some(), "{seen:?}");
}

async fn names(store: &KubeStore) -> Vec<String> {
    store
        .list(Some("VirtualService"), None)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.name)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn list_watch_bookmark_and_gone_relist_keep_the_store_equal_to_the_cluster() {
    let (client, mut api) = pair();
    let store = KubeStore::new();
    let mut events = store.watch();
    let task = store.spawn_kind(client, Kind::VirtualService);
    let mut parked = Vec::new();

    // 1. The initial list: one valid object, one with weights summing to 120.
    let (seen, send) = next(&mut api).await.unwrap();
    assert_list(&seen);
    let mut broken = vs("broken", "11", 1, &["reviews"], 60);
    broken["spec"]["http"][0]["route"][1]["weight"] = json!(60);
    answer(
        send,
        Reply::Json(
            200,
            list(
                "networking.istio.io/v1",
                "VirtualService",
                "100",
                vec![vs("reviews", "10", 1, &["reviews"], 90), broken],
            ),
        ),
        &mut parked,
    );
    tokio::time::timeout(
        Duration::from_secs(5),
        store.wait_synced(&[Kind::VirtualService]),
    )
    .await
    .expect("synced after the initial list");
    assert_eq!(
        names(&store).await,
        ["reviews"],
        "the invalid object is skipped"
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (ev.event_type, ev.object.key.name.as_str()),
        (EventType::Added, "reviews")
    );
    let stored = &ev.object.object;
    assert_eq!(stored["metadata"]["namespace"], "shop");
    assert!(
        stored["metadata"].get("annotations").is_none(),
        "kubectl's copy is dropped: {stored}"
    );
    assert!(stored["metadata"].get("managedFields").is_none());

    // 2. The watch from the list's resourceVersion: ADDED, MODIFIED, BOOKMARK.
    let (seen, send) = next(&mut api).await.unwrap();
    assert_watch(&seen, "100");
    answer(
        send,
        Reply::Events(vec![
            event("ADDED", vs("details", "101", 1, &["details"], 50)),
            event("MODIFIED", vs("reviews", "102", 2, &["reviews"], 80)),
            event(
                "BOOKMARK",
                json!({"kind": "VirtualService", "apiVersion": "networking.istio.io/v1",
                       "metadata": {"resourceVersion": "105", "creationTimestamp": null}}),
            ),
        ]),
        &mut parked,
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (ev.event_type, ev.object.key.name.as_str()),
        (EventType::Added, "details")
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (
            ev.event_type,
            ev.object.key.name.as_str(),
            ev.object.generation
        ),
        (EventType::Modified, "reviews", 2)
    );

    // 3. The stream ended: the watch resumes from the bookmark's version,
    //    and the API server says it is too old.
    let (seen, send) = next(&mut api).await.unwrap();
    assert_watch(&seen, "105");
    answer(
        send,
        Reply::Events(vec![event(
            "ERROR",
            status(410, "Expired", "too old resource version: 105 (190)"),
        )]),
        &mut parked,
    );

    // 4. 410 Gone: a full re-list, in which `details` no longer exists.
    let (seen, send) = next(&mut api).await.unwrap();
    assert_list(&seen);
    answer(
        send,
        Reply::Json(
            200,
            list(
                "networking.istio.io/v1",
                "VirtualService",
                "200",
                vec![vs("reviews", "102", 2, &["reviews"], 80)],
            ),
        ),
        &mut parked,
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (ev.event_type, ev.object.key.name.as_str()),
        (EventType::Deleted, "details"),
        "an object missing from the re-list is deleted"
    );
    assert_eq!(names(&store).await, ["reviews"]);

    // 5. Watching again from the re-list's version: a DELETED event.
    let (seen, send) = next(&mut api).await.unwrap();
    assert_watch(&seen, "200");
    answer(
        send,
        Reply::Events(vec![event(
            "DELETED",
            vs("reviews", "201", 2, &["reviews"], 80),
        )]),
        &mut parked,
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(
        (ev.event_type, ev.object.key.name.as_str()),
        (EventType::Deleted, "reviews")
    );
    assert!(names(&store).await.is_empty());
    // No event for the unchanged re-listed `reviews`, none for `broken`.
    assert!(events.try_recv().is_err());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_crd_that_is_not_installed_counts_as_listed_and_empty() {
    let (client, mut api) = pair();
    let store = KubeStore::new();
    let task = store.spawn_kind(client, Kind::RateLimitPolicy);
    let mut parked = Vec::new();
    let (seen, send) = next(&mut api).await.unwrap();
    assert_eq!(
        seen.path,
        "/apis/policy.mesh.dev/v1alpha1/ratelimitpolicies"
    );
    answer(
        send,
        Reply::Json(
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
        &mut parked,
    );
    tokio::time::timeout(
        Duration::from_secs(5),
        store.wait_synced(&[Kind::RateLimitPolicy]),
    )
    .await
    .expect("a missing CRD does not block meshd");
    assert!(store.list(None, None).await.unwrap().is_empty());
    task.abort();
}

#[tokio::test]
async fn writes_through_meshd_are_refused_with_a_kubectl_hint() {
    let store = KubeStore::new();
    let err = store.apply(Vec::new()).await.unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly(_)));
    assert!(err.to_string().contains("kubectl apply"), "{err}");
    let err = store.delete(Vec::new()).await.unwrap_err();
    assert!(err.to_string().contains("kubectl delete"), "{err}");
}

#[tokio::test]
async fn the_leader_writes_accepted_conditions_with_the_field_path_into_status() {
    let store = KubeStore::new();
    let mut broken = vs("broken", "11", 4, &["reviews"], 60);
    broken["spec"]["http"][0]["route"][1]["weight"] = json!(60);
    let good = vs("reviews", "10", 1, &["reviews"], 90);
    let objects: Vec<kube::api::DynamicObject> = [good, broken]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    store.replace_kind(Kind::VirtualService, objects);
    assert_eq!(store.pending_status().len(), 2);

    let (client, handle) = pair();
    let (seen, _server) = kube_support::serve(handle, |req| Reply::Json(200, req.body.clone()));
    let (leader_tx, leader) = tokio::sync::watch::channel(false);
    let writer = store.spawn_status_writer(client, leader);
    tokio::task::yield_now().await;
    assert!(seen.lock().unwrap().is_empty(), "only the leader writes");
    leader_tx.send(true).unwrap();
    let status_writes =
        |seen: &[kube_support::Seen]| seen.iter().filter(|r| r.path.ends_with("/status")).count();
    kube_support::eventually("two status writes", || {
        status_writes(&seen.lock().unwrap()) == 2
    })
    .await;
    let seen = seen.lock().unwrap();
    let broken = seen
        .iter()
        .find(|r| r.path.ends_with("/broken/status"))
        .expect("a write for the invalid object");
    assert_eq!(broken.method, Method::PATCH);
    assert_eq!(
        broken.path,
        "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/broken/status"
    );
    assert_eq!(
        broken.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let c = &broken.body["status"]["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str()),
        (Some("Accepted"), Some("False"))
    );
    assert_eq!(c["observedGeneration"], 4);
    assert!(
        c["message"].as_str().unwrap().contains("spec.http[0]"),
        "{c}"
    );
    let good = seen
        .iter()
        .find(|r| r.path.ends_with("/reviews/status"))
        .unwrap();
    assert_eq!(good.body["status"]["conditions"][0]["status"], "True");
    drop(seen);
    assert!(store.pending_status().is_empty());

    // An object that already carries the status it should have is not rewritten.
    let mut settled = vs("reviews", "12", 1, &["reviews"], 90);
    settled["status"] = good_status();
    store.apply_object(
        Kind::VirtualService,
        serde_json::from_value(settled).unwrap(),
    );
    assert!(store.pending_status().is_empty());
    writer.abort();
}

#[tokio::test]
async fn the_leader_posts_a_warning_event_for_an_invalid_object() {
    let store = KubeStore::new();
    let mut broken = vs("broken", "11", 4, &["reviews"], 60);
    broken["spec"]["http"][0]["route"][1]["weight"] = json!(60);
    let good = vs("reviews", "10", 1, &["reviews"], 90);
    let objects: Vec<kube::api::DynamicObject> = [good, broken]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    store.replace_kind(Kind::VirtualService, objects);

    let (client, handle) = pair();
    let (seen, _server) = kube_support::serve(handle, |req| Reply::Json(201, req.body.clone()));
    let (leader_tx, leader) = tokio::sync::watch::channel(false);
    let writer = store.spawn_status_writer(client, leader);
    tokio::task::yield_now().await;
    assert!(seen.lock().unwrap().is_empty(), "only the leader writes");
    leader_tx.send(true).unwrap();
    let is_event = |r: &kube_support::Seen| r.path.ends_with("/events");
    kube_support::eventually("an event", || seen.lock().unwrap().iter().any(is_event)).await;
    kube_support::eventually("both status writes", || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count()
            == 2
    })
    .await;
    let seen = seen.lock().unwrap();
    let events: Vec<_> = seen.iter().filter(|r| is_event(r)).collect();
    assert_eq!(events.len(), 1, "only the invalid object gets an event");
    let e = events[0];
    assert_eq!(e.method, Method::POST);
    assert_eq!(e.path, "/api/v1/namespaces/shop/events");
    let body = &e.body;
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "Event");
    assert_eq!(body["metadata"]["namespace"], "shop");
    assert!(
        body["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("broken."),
        "{body}"
    );
    assert_eq!(
        body["involvedObject"],
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "namespace": "shop", "name": "broken", "uid": "0b8d7c1e-broken",
               "resourceVersion": "11"})
    );
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["count"], 1);
    assert_eq!(body["source"]["component"], "meshd");
    assert_eq!(body["reportingComponent"], "meshd");
    assert!(body["firstTimestamp"].is_string(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("VirtualService shop/broken: "),
        "{message}"
    );
    assert!(message.contains("spec.http[0]"), "{message}");
    // The event follows the status write of the same object.
    let status_at = seen
        .iter()
        .position(|r| r.path.ends_with("/broken/status"))
        .unwrap();
    let event_at = seen.iter().position(is_event).unwrap();
    assert!(status_at < event_at);
    writer.abort();
}

fn good_status() -> Value {
    json!({"conditions": [{"type": "Accepted", "status": "True", "reason": "Valid",
                           "message": "accepted by meshd", "observedGeneration": 1}]})
}
