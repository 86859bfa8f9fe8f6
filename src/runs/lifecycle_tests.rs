use super::*;
use crate::records::RunStatus::*;

fn run_in(status: RunStatus) -> Run {
    let mut run = Run::new("ctrl", "goal", "owner");
    run.status = status;
    run.revision = 4;
    run.state_json = json!({"a": 1, "b": 2});
    run
}

fn all_changes() -> Vec<Change> {
    vec![
        Change::Start,
        Change::Wait {
            wait_json: json!({"for": "approval"}),
        },
        Change::Resume {
            patch: Some(json!({"b": 3})),
        },
        Change::Finish { final_state: None },
        Change::Fail {
            reason: "boom".into(),
        },
        Change::RequestCancel,
        Change::Cancel,
        Change::UpdateState {
            patch: json!({"c": 4}),
            next_step: Some("review".into()),
        },
        Change::ObserveStep {
            external_run_id: "child-1".into(),
            status: RunStepStatus::Running,
        },
        Change::ContinueAsNew {
            next_run_id: crate::records::continued_run_id(uuid::Uuid::nil()),
        },
    ]
}

#[test]
fn legal_moves_are_exactly_the_table() {
    let legal = [
        (Created, Running),
        (Running, Waiting),
        (Waiting, Running),
        (Running, Finished),
        (Running, Failed),
        (Running, Cancelled),
        (Waiting, Finished),
        (Waiting, Failed),
        (Waiting, Cancelled),
        (Created, Cancelled),
        (Created, Failed),
        (Running, ContinuedAsNew),
        (Waiting, ContinuedAsNew),
    ];
    for from in RunStatus::ALL {
        for to in RunStatus::ALL {
            assert_eq!(
                is_legal_move(from, to),
                legal.contains(&(from, to)),
                "{from:?} -> {to:?}"
            );
        }
    }
}

#[test]
fn every_planned_status_move_is_legal_and_terminal_runs_refuse_all_but_observations() {
    let now = Utc::now();
    for from in RunStatus::ALL {
        for change in all_changes() {
            let run = run_in(from);
            match plan(&run, &change, now) {
                Ok(Some(p)) => {
                    assert!(!from.is_terminal());
                    if p.run.status != from {
                        assert!(is_legal_move(from, p.run.status), "{from:?} {change:?}");
                    }
                    assert_eq!(p.run.revision, 5);
                    assert_eq!(p.run.updated_at, now);
                    assert_eq!(p.audit.name(), change.audit_kind().as_str());
                    assert_eq!(p.outcome.is_some(), p.run.status.is_terminal());
                    assert_eq!(p.run.ended_at.is_some(), p.run.status.is_terminal());
                }
                // A terminal run's record is left alone; the step is recorded.
                Ok(None) if from.is_terminal() => {
                    assert!(matches!(change, Change::ObserveStep { .. }), "{change:?}");
                }
                Ok(None) => panic!("nothing planned for {from:?} {change:?}"),
                Err(RunError::AlreadyTerminal { status, .. }) => {
                    assert!(from.is_terminal());
                    assert_eq!(status, from);
                }
                Err(RunError::InvalidTransition { from: f, to }) => {
                    assert_eq!(f, from);
                    assert!(!from.is_terminal());
                    assert_eq!(Some(to), change.target());
                }
                Err(e) => panic!("unexpected {e} for {from:?} {change:?}"),
            }
        }
    }
}

#[test]
fn an_observation_on_a_terminal_run_plans_no_change_to_it() {
    let observe = Change::ObserveStep {
        external_run_id: "child-1".into(),
        status: RunStepStatus::Succeeded,
    };
    for status in [Finished, Failed, Cancelled, ContinuedAsNew] {
        let result = plan(&run_in(status), &observe, Utc::now());
        assert!(matches!(result, Ok(None)), "{status:?}: {result:?}");
    }
}

#[test]
fn start_and_resume_each_have_one_source() {
    let now = Utc::now();
    let refused = |status, change: Change| {
        matches!(
            plan(&run_in(status), &change, now),
            Err(RunError::InvalidTransition { .. })
        )
    };
    assert!(refused(Waiting, Change::Start));
    assert!(refused(Running, Change::Start));
    assert!(refused(Created, Change::Resume { patch: None }));
    assert!(refused(Running, Change::Resume { patch: None }));
    assert!(refused(Created, Change::Finish { final_state: None }));
    assert!(refused(
        Created,
        Change::Wait {
            wait_json: json!(1)
        }
    ));
}

#[test]
fn cancel_request_blocks_finish_update_state_and_continue_as_new_only() {
    let now = Utc::now();
    for change in all_changes() {
        let mut run = run_in(match change {
            Change::Start => Created,
            Change::Resume { .. } => Waiting,
            _ => Running,
        });
        run.cancel_requested = true;
        let result = plan(&run, &change, now);
        match change {
            Change::Finish { .. } | Change::UpdateState { .. } | Change::ContinueAsNew { .. } => {
                assert!(matches!(result, Err(RunError::CancelPending { id }) if id == run.id));
            }
            Change::RequestCancel => assert_eq!(result.ok(), Some(None), "idempotent"),
            _ => assert!(matches!(result, Ok(Some(_))), "{change:?}: {result:?}"),
        }
    }
}

#[test]
fn merge_is_shallow_and_non_objects_replace() {
    let mut state = json!({"a": {"x": 1}, "b": 2});
    merge_state(&mut state, json!({"a": {"y": 2}, "c": null}));
    assert_eq!(state, json!({"a": {"y": 2}, "b": 2, "c": null}));
    merge_state(&mut state, json!([1, 2]));
    assert_eq!(state, json!([1, 2]));
    merge_state(&mut state, json!({"k": true}));
    assert_eq!(state, json!({"k": true}));
    merge_state(&mut state, Value::Null);
    assert_eq!(state, Value::Null);
}

#[test]
fn changes_shape_the_record() {
    let now = Utc::now();
    let planned = |status, change| plan(&run_in(status), &change, now).unwrap().unwrap();

    let waiting = planned(
        Running,
        Change::Wait {
            wait_json: json!({"for": "approval"}),
        },
    );
    assert_eq!(waiting.run.wait_json, Some(json!({"for": "approval"})));

    let waiting_run = waiting.run;
    let resumed = plan(
        &waiting_run,
        &Change::Resume {
            patch: Some(json!({"b": 3})),
        },
        now,
    )
    .unwrap()
    .unwrap();
    assert_eq!(resumed.run.wait_json, None);
    assert_eq!(resumed.run.state_json, json!({"a": 1, "b": 3}));

    let finished = planned(
        Running,
        Change::Finish {
            final_state: Some(json!({"done": true})),
        },
    );
    assert_eq!(
        finished.run.state_json,
        json!({"a": 1, "b": 2, "done": true})
    );
    assert_eq!(
        finished.outcome,
        Some(TerminalEvent::RunCompleted {
            structured_output: Some(json!({"a": 1, "b": 2, "done": true}))
        })
    );

    let failed = planned(
        Created,
        Change::Fail {
            reason: "no disk".into(),
        },
    );
    assert_eq!(failed.run.state_json["a"], json!(1));
    assert_eq!(failed.run.state_json["failure"]["reason"], json!("no disk"));
    assert_eq!(failed.run.state_json["failure"]["at"], json!(now));
    assert_eq!(
        failed.outcome,
        Some(TerminalEvent::RunFailed {
            reason: "no disk".into()
        })
    );

    let updated = planned(
        Created,
        Change::UpdateState {
            patch: json!({"c": 4}),
            next_step: Some("review".into()),
        },
    );
    assert_eq!(updated.run.status, Created);
    assert_eq!(updated.run.current_step.as_deref(), Some("review"));
    assert_eq!(updated.run.state_json, json!({"a": 1, "b": 2, "c": 4}));

    let cancel_requested = planned(Waiting, Change::RequestCancel);
    assert!(cancel_requested.run.cancel_requested);
    assert_eq!(cancel_requested.run.status, Waiting);
}

#[test]
fn audit_payload_names_the_move_and_revision() {
    let p = plan(&run_in(Created), &Change::Start, Utc::now())
        .unwrap()
        .unwrap();
    assert_eq!(
        p.audit,
        EventKind::custom(
            "started",
            json!({"from": "created", "status": "running", "revision": 5})
        )
    );
}

#[test]
fn audit_kind_names_round_trip() {
    for kind in AuditKind::ALL {
        assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(AuditKind::parse("RunCompleted"), None);
}

#[test]
fn a_run_at_the_last_revision_is_refused_not_overflowed() {
    let mut run = run_in(Created);
    run.revision = u64::MAX;
    let planned = plan(&run, &Change::Start, Utc::now());
    assert!(
        matches!(
            planned,
            Err(RunError::RevisionExhausted {
                revision: u64::MAX,
                ..
            })
        ),
        "{planned:?}"
    );
}
