//! Conformance cases for [`Store::list_runs`]: filters and paging, newest
//! first, alike on every backend.

use chrono::{TimeZone, Utc};
use serde_json::Value;
use troupe::records::{EventKind, Run, RunFilter, RunStatus, StoreError};
use uuid::Uuid;

use super::conformance::AnyStore;

async fn insert(store: &AnyStore, flow: &str, second: i64) -> Run {
    let mut run = Run::new(flow, "goal", "o");
    run.created_at = Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap();
    run.updated_at = run.created_at;
    let audit = EventKind::custom("created", Value::Null);
    store.insert_run(run.clone(), Some(audit)).await.unwrap();
    run
}

fn ids(runs: &[Run]) -> Vec<Uuid> {
    runs.iter().map(|r| r.id).collect()
}

pub async fn runs_are_listed_newest_first_by_page(store: AnyStore) {
    let all = RunFilter::default();
    assert!(store.list_runs(&all, None, 10).await.unwrap().is_empty());
    // Inserted out of creation order: the list follows `created_at`.
    let b = insert(&store, "beta", 2).await;
    let a = insert(&store, "alpha", 1).await;
    let c = insert(&store, "alpha", 3).await;
    let mut running = c.clone();
    running.status = RunStatus::Running;
    let started = EventKind::custom("started", Value::Null);
    store.update_run(running, 0, started).await.unwrap();

    let first = store.list_runs(&all, None, 2).await.unwrap();
    assert_eq!(ids(&first), vec![c.id, b.id]);
    assert_eq!(first[0].status, RunStatus::Running);
    let second = store.list_runs(&all, Some(b.id), 2).await.unwrap();
    assert_eq!(ids(&second), vec![a.id]);
    let past_end = store.list_runs(&all, Some(a.id), 2).await.unwrap();
    assert!(past_end.is_empty());

    let alpha = RunFilter {
        controller_id: Some("alpha".into()),
        ..RunFilter::default()
    };
    let listed = store.list_runs(&alpha, None, 10).await.unwrap();
    assert_eq!(ids(&listed), vec![c.id, a.id]);
    let created_alpha = RunFilter {
        status: Some(RunStatus::Created),
        ..alpha.clone()
    };
    let listed = store.list_runs(&created_alpha, None, 10).await.unwrap();
    assert_eq!(ids(&listed), vec![a.id]);
    let failed = RunFilter {
        status: Some(RunStatus::Failed),
        ..RunFilter::default()
    };
    assert!(store.list_runs(&failed, None, 10).await.unwrap().is_empty());
    assert!(store.list_runs(&all, None, 0).await.unwrap().is_empty());

    // Runs created in the same instant are ordered by id, and paged
    // through without one lost or repeated.
    let d = insert(&store, "gamma", 4).await;
    let e = insert(&store, "gamma", 4).await;
    let (high, low) = if d.id > e.id {
        (d.id, e.id)
    } else {
        (e.id, d.id)
    };
    let first = store.list_runs(&all, None, 1).await.unwrap();
    assert_eq!(ids(&first), vec![high]);
    let next = store.list_runs(&all, Some(high), 2).await.unwrap();
    assert_eq!(ids(&next), vec![low, c.id]);

    // By owner, parent and creation time.
    let mut child = Run::new("alpha", "goal", "someone");
    child.parent_run_id = Some(a.id);
    child.created_at = Utc.timestamp_opt(1_700_000_010, 0).unwrap();
    child.updated_at = child.created_at;
    store.insert_run(child.clone(), None).await.unwrap();
    let by = |filter: RunFilter| {
        let store = store.clone();
        async move { ids(&store.list_runs(&filter, None, 10).await.unwrap()) }
    };
    let owned = RunFilter {
        owner_session_key: Some("someone".into()),
        ..RunFilter::default()
    };
    assert_eq!(by(owned).await, vec![child.id]);
    let children = RunFilter {
        parent_run_id: Some(a.id),
        ..RunFilter::default()
    };
    assert_eq!(by(children).await, vec![child.id]);
    let orphans_of_b = RunFilter {
        parent_run_id: Some(b.id),
        ..RunFilter::default()
    };
    assert!(by(orphans_of_b).await.is_empty());
    let since = RunFilter {
        created_since: Some(c.created_at),
        ..RunFilter::default()
    };
    let mut recent = vec![child.id, high, low, c.id];
    assert_eq!(by(since.clone()).await, recent);
    let alpha_since = RunFilter {
        controller_id: Some("alpha".into()),
        ..since
    };
    recent.retain(|id| *id == child.id || *id == c.id);
    assert_eq!(by(alpha_since).await, recent);

    let unknown = Uuid::now_v7();
    let err = store.list_runs(&all, Some(unknown), 10).await.unwrap_err();
    assert!(
        matches!(err, StoreError::RunNotFound(id) if id == unknown),
        "{err}"
    );
}
