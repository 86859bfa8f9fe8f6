//! Behaviour cases of the control plane's writes: revision conflicts and
//! retries, store failures, unknown runs, bad input, mirrored runs and step
//! observations; `tests/runs_manager.rs` runs each over every store.

use std::sync::Arc;

use serde_json::json;
use troupe::records::{EventKind, StoreError};
use troupe::runs::{
    CreateManagedInput, CreateMirroredInput, RunError, RunManager, RunStatus, RunStepStatus,
    StepObservation, StepRuntime,
};
use troupe::store::{Fault, FaultyStore};
use uuid::Uuid;

use super::backends::AnyStore;
use super::manager_cases::{events, input, kinds, run_in};
use super::rival::{RivalMove, RivalStore};
use super::run_model::Move;

pub async fn revision_conflicts_are_retried(store: AnyStore) {
    let rival = RivalStore::new(store, 3, RivalMove::Touch);
    let m = RunManager::new(rival.clone());
    let id = m.create_managed(input("o")).await.unwrap().id;
    let run = m
        .update_state(id, json!({"mine": true}), None)
        .await
        .unwrap();
    assert_eq!(rival.rival_writes(), 3);
    assert_eq!(run.revision, 4, "three rival writes, then ours");
    assert_eq!(
        run.state_json,
        json!({"items": 3, "rival": 3, "mine": true})
    );
    assert_eq!(m.get(id).await.unwrap().unwrap(), run);
    assert_eq!(
        kinds(&m, id).await,
        [
            "created",
            "rival_write",
            "rival_write",
            "rival_write",
            "state_updated"
        ]
    );
}

pub async fn a_retry_rechecks_the_rules(store: AnyStore) {
    let rival = RivalStore::new(store, 1, RivalMove::Cancel);
    let m = RunManager::new(rival.clone());
    let id = m.create_managed(input("o")).await.unwrap().id;
    let result = m.update_state(id, json!({"late": true}), None).await;
    assert!(
        matches!(
            result,
            Err(RunError::AlreadyTerminal {
                status: RunStatus::Cancelled,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(kinds(&m, id).await, ["created", "rival_cancel"]);
}

pub async fn persistent_conflicts_surface_revision_mismatch(store: AnyStore) {
    let rival = RivalStore::new(store, usize::MAX, RivalMove::Touch);
    let m = RunManager::new(rival.clone()).with_max_attempts(3);
    let id = m.create_managed(input("o")).await.unwrap().id;
    let result = m.update_state(id, json!({"mine": true}), None).await;
    assert!(
        matches!(
            result,
            Err(RunError::RevisionMismatch {
                expected: 2,
                actual: 3
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        rival.rival_writes(),
        3,
        "one read, and one conflict, per attempt"
    );
    let run = m.get(id).await.unwrap().unwrap();
    assert_eq!(run.state_json.get("mine"), None, "the change did not land");
    assert_eq!(
        kinds(&m, id)
            .await
            .iter()
            .filter(|k| *k == "state_updated")
            .count(),
        0
    );
}

pub async fn store_failures_are_reported_not_retried(store: AnyStore) {
    let faulty = Arc::new(FaultyStore::new(store));
    faulty.inject(Fault::Fail {
        op: "atomic",
        count: 1,
    });
    let m = RunManager::new(faulty.clone());
    let id = m.create_managed(input("o")).await.unwrap().id;
    let result = m.start_running(id).await;
    assert!(matches!(
        result,
        Err(RunError::Store(StoreError::Injected { op: "atomic" }))
    ));
    assert_eq!(faulty.fired(), vec!["atomic"]);
    let run = m.get(id).await.unwrap().unwrap();
    assert_eq!((run.status, run.revision), (RunStatus::Created, 0));
    assert_eq!(m.start_running(id).await.unwrap().revision, 1);
}

pub async fn unknown_runs_are_not_found(store: AnyStore) {
    let m = RunManager::new(store);
    let ghost = Uuid::now_v7();
    for mv in Move::ALL {
        let result = mv.apply(&m, ghost, 0).await;
        assert!(
            matches!(result, Err(RunError::NotFound(id)) if id == ghost),
            "{mv:?}: {result:?}"
        );
    }
    assert_eq!(m.list_steps(ghost).await.unwrap(), vec![]);
}

pub async fn invalid_input_is_invalid_data(store: AnyStore) {
    let m = RunManager::new(store);
    let empty_owner = m
        .create_managed(CreateManagedInput {
            owner_session_key: "".into(),
            ..input("o")
        })
        .await;
    assert!(matches!(empty_owner, Err(RunError::InvalidData(_))));
    let empty_controller = m
        .create_mirrored(CreateMirroredInput {
            controller_id: " ".into(),
            ..input("o")
        })
        .await;
    assert!(matches!(empty_controller, Err(RunError::InvalidData(_))));
    assert_eq!(m.list_by_owner("").await.unwrap(), vec![]);
    assert_eq!(m.list_by_owner("o").await.unwrap(), vec![]);
    let id = run_in(&m, RunStatus::Running).await;
    let result = m.record_step_observation(observation(id, "", None)).await;
    assert!(matches!(result, Err(RunError::InvalidData(msg)) if msg.contains("external_run_id")));
    assert_eq!(m.get(id).await.unwrap().unwrap().revision, 1);
}

fn observation(run_id: Uuid, external_run_id: &str, child: Option<&str>) -> StepObservation {
    StepObservation {
        run_id,
        external_run_id: external_run_id.into(),
        task: "compile".into(),
        status: RunStepStatus::Running,
        child_session_key: child.map(str::to_owned),
        result_json: None,
    }
}

pub async fn create_mirrored_is_created_and_started(store: AnyStore) {
    let m = RunManager::new(store);
    let run = m.create_mirrored(input("s2")).await.unwrap();
    assert_eq!((run.status, run.revision), (RunStatus::Running, 1));
    assert_eq!(m.get(run.id).await.unwrap().unwrap(), run);
    let log = events(&m, run.id).await;
    let names: Vec<&str> = log.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["created", "started"]);
    assert_eq!(
        log[0].kind,
        EventKind::custom(
            "created",
            json!({"status": "created", "revision": 0, "runtime": "mirrored"})
        )
    );
}

pub async fn step_observations_upsert_by_external_run_id(store: AnyStore) {
    let m = RunManager::new(store);
    let id = m.create_mirrored(input("s")).await.unwrap().id;
    let first = m
        .record_step_observation(observation(id, "job-1", Some("worker-a")))
        .await
        .unwrap();
    assert_eq!(first.run_id, id);
    assert_eq!(first.runtime, StepRuntime::Mirrored);
    assert_eq!(first.status, RunStepStatus::Running);
    let done = m
        .record_step_observation(StepObservation {
            status: RunStepStatus::Succeeded,
            result_json: Some(json!({"ok": true})),
            ..observation(id, "job-1", None)
        })
        .await
        .unwrap();
    assert_eq!(done.id, first.id, "the same step row");
    assert_eq!(done.created_at, first.created_at);
    assert_eq!(
        done.child_session_key.as_deref(),
        Some("worker-a"),
        "kept when absent"
    );
    assert_eq!(done.status, RunStepStatus::Succeeded);
    assert_eq!(done.result_json, Some(json!({"ok": true})));
    let moved = m
        .record_step_observation(observation(id, "job-1", Some("worker-b")))
        .await
        .unwrap();
    assert_eq!(
        moved.child_session_key.as_deref(),
        Some("worker-b"),
        "replaced when given"
    );
    let other = m
        .record_step_observation(observation(id, "job-2", None))
        .await
        .unwrap();
    assert_ne!(other.id, first.id);

    let steps = m.list_steps(id).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .map(|s| s.external_run_id.as_str())
            .collect::<Vec<_>>(),
        ["job-1", "job-2"]
    );
    assert_eq!(steps[0], moved);
    let run = m.get(id).await.unwrap().unwrap();
    assert_eq!(run.revision, 5, "created+started, then one per observation");
    assert_eq!(
        kinds(&m, id).await,
        [
            "created",
            "started",
            "step_observed",
            "step_observed",
            "step_observed",
            "step_observed"
        ]
    );
}

pub async fn step_observation_for_unknown_run_is_not_found(store: AnyStore) {
    let m = RunManager::new(store.clone());
    let ghost = Uuid::now_v7();
    let result = m
        .record_step_observation(observation(ghost, "job-1", None))
        .await;
    assert!(
        matches!(result, Err(RunError::NotFound(id)) if id == ghost),
        "{result:?}"
    );
    assert_eq!(store.list_steps(ghost).await.unwrap(), vec![]);
}

/// A mirrored step can report after its run ended (the run was cancelled or
/// failed while the work went on elsewhere): the step is still recorded, and
/// the ended run's record, revision and audit log stay as they are.
pub async fn step_observations_on_a_terminal_run_leave_the_run_alone(store: AnyStore) {
    let m = RunManager::new(store.clone());
    for status in [RunStatus::Finished, RunStatus::Failed, RunStatus::Cancelled] {
        let id = run_in(&m, status).await;
        let before = m.get(id).await.unwrap().unwrap();
        let log = events(&m, id).await;
        let first = m
            .record_step_observation(observation(id, "job-1", Some("worker-a")))
            .await
            .unwrap();
        let done = m
            .record_step_observation(StepObservation {
                status: RunStepStatus::Succeeded,
                result_json: Some(json!({"ok": true})),
                ..observation(id, "job-1", None)
            })
            .await
            .unwrap();
        assert_eq!(done.id, first.id, "upserted by external run id");
        assert_eq!(done.child_session_key.as_deref(), Some("worker-a"));
        assert_eq!(m.list_steps(id).await.unwrap(), vec![done], "{status:?}");
        assert_eq!(m.get(id).await.unwrap().unwrap(), before, "{status:?}");
        assert_eq!(events(&m, id).await, log, "no audit event on {status:?}");
    }

    // The run ends between the manager's read and its write: the retry
    // finds it terminal and records the step alone.
    let id = run_in(&m, RunStatus::Running).await;
    let rival = RivalStore::new(store, 1, RivalMove::Cancel);
    let step = RunManager::new(rival.clone())
        .record_step_observation(observation(id, "job-9", None))
        .await
        .unwrap();
    assert_eq!(rival.rival_writes(), 1);
    assert_eq!(m.list_steps(id).await.unwrap(), vec![step]);
    let run = m.get(id).await.unwrap().unwrap();
    assert_eq!((run.status, run.revision), (RunStatus::Cancelled, 2));
    assert_eq!(kinds(&m, id).await, ["created", "started", "rival_cancel"]);
}
