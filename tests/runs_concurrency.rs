//! Many writers on one run at once, on a multi-threaded runtime, over every
//! store: each change lands exactly once or reports `RevisionMismatch` after
//! its retries, and the revision and the audit log count exactly the landed ones.

#[path = "support/backends.rs"]
#[macro_use]
mod backends;

mod cases {
    use std::collections::BTreeSet;

    use serde_json::json;
    use tokio::task::JoinSet;
    use troupe::records::EventKind;
    use troupe::runs::{CreateManagedInput, RunError, RunManager, RunStatus};

    use super::backends::AnyStore;

    const TASKS: usize = 32;
    const UPDATES_PER_TASK: usize = 4;

    pub async fn concurrent_updates_land_exactly_once(store: AnyStore) {
        let m = RunManager::new(store);
        let id = m
            .create_managed(CreateManagedInput::new("ctrl", "contended", "owner"))
            .await
            .unwrap()
            .id;
        let mut tasks = JoinSet::new();
        for t in 0..TASKS {
            let m = m.clone();
            tasks.spawn(async move {
                let mut results = Vec::new();
                for u in 0..UPDATES_PER_TASK {
                    let key = format!("t{t}-u{u}");
                    let result = m.update_state(id, json!({ key.clone(): true }), None).await;
                    results.push((key, result));
                }
                results
            });
        }
        let mut landed = BTreeSet::new();
        let mut gave_up = BTreeSet::new();
        while let Some(results) = tasks.join_next().await {
            for (key, result) in results.unwrap() {
                match result {
                    Ok(_) => assert!(landed.insert(key)),
                    Err(RunError::RevisionMismatch { expected, actual }) => {
                        assert!(actual > expected, "{expected} -> {actual}");
                        assert!(gave_up.insert(key));
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        }
        assert_eq!(landed.len() + gave_up.len(), TASKS * UPDATES_PER_TASK);
        assert!(!landed.is_empty());

        let run = m.get(id).await.unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Created);
        assert_eq!(run.revision, landed.len() as u64);
        let state = run.state_json.as_object().unwrap();
        let in_state: BTreeSet<String> = state.keys().cloned().collect();
        assert_eq!(
            in_state, landed,
            "exactly the landed patches are in the state"
        );

        let log = m.list_events(id, usize::MAX).await.unwrap();
        assert_eq!(
            log.len(),
            landed.len() + 1,
            "created + one per landed update"
        );
        let mut audited = Vec::new();
        let mut revisions = Vec::new();
        for event in &log[1..] {
            let EventKind::Custom { name, payload } = &event.kind else {
                panic!("unexpected {event:?}");
            };
            assert_eq!(name, "state_updated");
            revisions.push(payload["revision"].as_u64().unwrap());
            let patch = payload["patch"].as_object().unwrap();
            audited.extend(patch.keys().cloned());
        }
        assert_eq!(revisions, (1..=landed.len() as u64).collect::<Vec<_>>());
        let audited_set: BTreeSet<String> = audited.iter().cloned().collect();
        assert_eq!(
            audited.len(),
            audited_set.len(),
            "no update is audited twice"
        );
        assert_eq!(audited_set, landed);
    }

    pub async fn racing_terminal_moves_record_one_outcome(store: AnyStore) {
        let m = RunManager::new(store.clone());
        let id = m
            .create_managed(CreateManagedInput::new("ctrl", "race", "owner"))
            .await
            .unwrap()
            .id;
        m.start_running(id).await.unwrap();
        let mut tasks = JoinSet::new();
        for t in 0..TASKS {
            let m = m.clone();
            tasks.spawn(async move {
                let result = match t % 4 {
                    0 => m.finish(id, Some(json!({"winner": t}))).await,
                    1 => m.fail(id, format!("task {t}")).await,
                    2 => m.cancel(id).await,
                    _ => m.request_cancel(id).await,
                };
                (t, result)
            });
        }
        let mut terminal_winners = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (t, result) = joined.unwrap();
            match result {
                Ok(run) if run.status.is_terminal() => terminal_winners.push((t, run.status)),
                Ok(run) => assert!(run.cancel_requested),
                Err(
                    RunError::AlreadyTerminal { .. }
                    | RunError::CancelPending { .. }
                    | RunError::RevisionMismatch { .. },
                ) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(terminal_winners.len(), 1, "{terminal_winners:?}");
        let (_, status) = terminal_winners[0];
        let run = m.get(id).await.unwrap().unwrap();
        assert_eq!(run.status, status);
        let log = m.list_events(id, usize::MAX).await.unwrap();
        let outcomes: Vec<_> = log.iter().filter_map(|e| e.kind.as_terminal()).collect();
        assert_eq!(outcomes.len(), 1);
        let expected = match status {
            RunStatus::Finished => "RunCompleted",
            RunStatus::Failed => "RunFailed",
            _ => "RunCancelled",
        };
        assert_eq!(outcomes[0].name(), expected);
        let audit = log
            .iter()
            .filter(|e| e.kind.as_terminal().is_none())
            .count() as u64;
        assert_eq!(
            audit,
            run.revision + 1,
            "one audit event per revision, plus created"
        );
    }
}

over_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 4)] cases;
    concurrent_updates_land_exactly_once,
    racing_terminal_moves_record_one_outcome,
);
