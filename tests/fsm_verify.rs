//! `FsmTable::verify` / `StateMachine::verify`: dead ends, states without a
//! path to a terminal state, unreachable states, unhandled events, handlers
//! without declared targets, handlers on terminal states.

use std::time::Duration;

use troupe::fsm::{
    ClauseRef, EventVariant, FsmError, NoAction, StateMachine, StateVariant, Transition,
    VerifyReport, fsm,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum Job {
    Queued,
    Running,
    Stuck,
    Done,
    Failed(String),
}

#[derive(Debug, Clone, EventVariant)]
enum Ev {
    Start,
    Finish,
    Crash,
    Poke,
}

type Machine = StateMachine<Job, Ev, (), NoAction<()>>;

/// Every state reachable, every non-terminal state can finish, every
/// event handled, every target declared.
fn sound() -> Machine {
    fsm! {
        state: Job; event: Ev; context: (); initial: Job::Queued;
        terminal: Job::Done, Job::Failed;
        state Job::Queued {
            on Ev::Start => [Job::Running] sync |_, _, _| Transition::to(Job::Running);
            timeout Duration::from_secs(60) => [Job::Failed] sync |_, _| Transition::to(Job::Failed("never started".into()));
        }
        state Job::Running {
            on Ev::Finish => [Job::Done] sync |_, _, _| Transition::to(Job::Done);
            on Ev::Poke => [Job::Running, Job::Stuck] sync |_, _, _| Transition::to(Job::Stuck);
        }
        state Job::Stuck {
            on Ev::Poke => [Job::Running] sync |_, _, _| Transition::to(Job::Running);
        }
        state _ {
            on Ev::Crash => [Job::Failed] sync |_, _, _| Transition::to(Job::Failed("crash".into()));
        }
    }
}

#[test]
fn a_sound_machine_verifies() {
    let m = sound();
    assert_eq!(m.verify(), Ok(()));
    assert_eq!(m.table().verify(), Ok(()));
    m.assert_verified();
    m.table().assert_verified();
    assert_eq!(m.table().initial, Some("Queued"));
    assert_eq!(m.table().terminals, ["Done", "Failed"]);
    assert_eq!(m.table().all_events, ["Start", "Finish", "Crash", "Poke"]);
}

#[tokio::test]
async fn is_terminal_follows_the_current_state() {
    let mut m = sound();
    assert!(!m.is_terminal());
    m.handle(Ev::Start, &mut ()).await.unwrap();
    m.handle(Ev::Poke, &mut ()).await.unwrap();
    assert_eq!(m.state(), &Job::Stuck);
    m.handle(Ev::Poke, &mut ()).await.unwrap();
    m.handle(Ev::Finish, &mut ()).await.unwrap();
    assert!(m.is_terminal());
    m.handle(Ev::Crash, &mut ()).await.unwrap();
    assert_eq!(m.state(), &Job::Failed("crash".into()));
    assert!(m.is_terminal());
    assert!(m.table().is_terminal("Failed"));
    assert!(!m.table().is_terminal("Stuck"));
}

#[test]
fn the_diagram_shows_timeout_edges_and_terminal_states() {
    let diagram = sound().to_mermaid();
    assert!(
        diagram.contains("Queued --> Failed : after 60s"),
        "{diagram}"
    );
    assert!(diagram.contains("Done --> [*]"), "{diagram}");
    assert!(diagram.contains("Failed --> [*]"), "{diagram}");
}

/// `Stuck` has no way out; `Failed` is never entered; `Poke` and `Crash`
/// are never handled.
fn flawed() -> Machine {
    fsm! {
        state: Job; event: Ev; context: (); initial: Job::Queued;
        terminal: Job::Done, Job::Failed;
        state Job::Queued {
            on Ev::Start => [Job::Running, Job::Stuck] sync |_, _, _| Transition::to(Job::Running);
        }
        state Job::Running {
            on Ev::Finish => [Job::Done] sync |_, _, _| Transition::to(Job::Done);
        }
        state Job::Done {
            on Ev::Start => [Job::Queued] sync |_, _, _| Transition::to(Job::Queued);
            // Only fails: not a way out, not reported.
            on Ev::Finish => [] sync |_, _, _| Err(FsmError::handler("already done"));
        }
    }
}

#[test]
fn dead_ends_unreachable_states_unhandled_events_and_terminal_handlers_are_reported() {
    let report = flawed().verify().unwrap_err();
    assert_eq!(report.dead_ends, ["Stuck"]);
    assert_eq!(report.unreachable, ["Failed"]);
    assert_eq!(report.unhandled_events, ["Crash", "Poke"]);
    assert_eq!(
        report.terminal_handlers,
        [ClauseRef {
            state: Some("Done"),
            event: "Start"
        }]
    );
    assert!(report.no_path_to_terminal.is_empty(), "{report}");
    assert!(report.unverifiable.is_empty());
    assert!(!report.initial_unknown);
    assert_eq!(
        report.to_string(),
        "the machine's declared graph has problems:\n\
         \x20 - dead ends (not terminal, and no clause moves out of them): `Stuck`\n\
         \x20 - unreachable from the initial state: `Failed`\n\
         \x20 - events no clause handles: `Crash`, `Poke`\n\
         \x20 - handler on a terminal state: `on Start` in `Done`\n"
    );
}

#[test]
#[should_panic(expected = "dead ends (not terminal, and no clause moves out of them): `Stuck`")]
fn assert_verified_panics_with_the_report() {
    flawed().assert_verified();
}

#[test]
fn a_loop_that_never_reaches_a_terminal_state_is_reported() {
    let m: Machine = fsm! {
        state: Job; event: Ev; context: (); initial: Job::Queued;
        terminal: Job::Done;
        state Job::Queued {
            on Ev::Start => [Job::Running, Job::Done] sync |_, _, _| Transition::to(Job::Running);
        }
        state Job::Running { on Ev::Poke => [Job::Stuck] sync |_, _, _| Transition::to(Job::Stuck); }
        state Job::Stuck { on Ev::Poke => [Job::Running] sync |_, _, _| Transition::to(Job::Running); }
        unhandled => [] sync |s, e, _| Err(FsmError::unhandled(s.variant_name(), e.variant_name()));
    };
    let report = m.verify().unwrap_err();
    // `Failed` is not terminal here: the hook fires there but never moves.
    assert_eq!(report.no_path_to_terminal, ["Running", "Stuck", "Failed"]);
    // The `unhandled` hook handles every event; `[]` declares it never moves.
    assert!(report.unhandled_events.is_empty());
    assert!(report.dead_ends.is_empty(), "{report}");
    assert_eq!(report.unreachable, ["Failed"]);
}

#[test]
fn handlers_without_targets_are_unverifiable_not_assumed() {
    let m: Machine = fsm! {
        state: Job; event: Ev; context: (); initial: Job::Queued;
        terminal: Job::Done;
        state Job::Queued {
            on Ev::Start => sync |_, _, _| Transition::to(Job::Running);
            timeout Duration::from_secs(1) => |_, _| Box::pin(async { Ok(Transition::to(Job::Queued)) });
        }
        state Job::Running { on Ev::Finish => [Job::Done] sync |_, _, _| Transition::to(Job::Done); }
        state _ { on Ev::Crash => sync |_, _, _| Transition::to(Job::Done); }
        unhandled => sync |s, _, _| Transition::to(s.clone());
    };
    let report = m.verify().unwrap_err();
    assert_eq!(
        report.unverifiable,
        [
            ClauseRef {
                state: Some("Queued"),
                event: "Start"
            },
            ClauseRef {
                state: None,
                event: "Crash"
            },
            ClauseRef {
                state: Some("Queued"),
                event: "<timeout>"
            },
            ClauseRef {
                state: None,
                event: "<unhandled>"
            },
        ]
    );
    // "May go anywhere": nothing is claimed unreachable or stuck.
    assert!(report.unreachable.is_empty() && report.no_path_to_terminal.is_empty());
    assert!(report.dead_ends.is_empty());
    let text = report.to_string();
    assert!(
        text.contains(
            "undeclared targets: cannot verify reachability from `Queued`: `on Start` in `Queued` declares no `[targets]`"
        ),
        "{text}"
    );
    assert!(
        text.contains("cannot verify reachability from `every state`: the `unhandled` hook"),
        "{text}"
    );
}

#[test]
fn an_initial_state_that_is_not_a_path_is_known_only_to_the_machine() {
    let initial = Job::Queued;
    let m: Machine = fsm! {
        state: Job; event: Ev; context: (); initial: initial;
        state Job::Queued { on Ev::Start => [Job::Done] sync |_, _, _| Transition::to(Job::Done); }
    };
    assert_eq!(m.table().initial, None);
    let from_table = m.table().verify().unwrap_err();
    assert!(from_table.initial_unknown);
    assert!(from_table.unreachable.is_empty());
    assert!(
        from_table
            .to_string()
            .contains("the initial state is not a path")
    );
    let from_machine = m.verify().unwrap_err();
    assert!(!from_machine.initial_unknown);
    assert_eq!(from_machine.unreachable, ["Running", "Stuck", "Failed"]);
    // Without `terminal:`, a state nothing leaves is a dead end.
    assert_eq!(
        from_machine.dead_ends,
        ["Running", "Stuck", "Done", "Failed"]
    );
}

#[test]
fn initial_states_with_fields_are_named() {
    let m: Machine = fsm! {
        state: Job; event: Ev; context: (); initial: Job::Failed("at birth".into());
        terminal: Job::Failed;
    };
    assert_eq!(m.table().initial, Some("Failed"));
    assert!(m.is_terminal());
}

#[test]
fn an_empty_report_reads_as_such() {
    let report = VerifyReport::default();
    assert!(report.is_empty());
    assert_eq!(report.to_string(), "the machine verified: no finding");
}
