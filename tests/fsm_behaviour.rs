//! Behaviour of `StateMachine` built by `fsm!`: dispatch, fallbacks, hooks,
//! timeouts and actions.

use std::time::Duration;

use async_trait::async_trait;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum S {
    Idle,
    Busy { jobs: u32 },
    Broken(String),
    Done,
}

#[derive(Debug, Clone, EventVariant)]
enum E {
    Start,
    Work,
    Stop,
    Crash(String),
    Stray,
}

/// Records every action run, so tests can check order.
#[derive(Default, Debug)]
struct Trace {
    ran: Vec<A>,
    hooks_seen: Vec<String>,
}
impl FsmContext for Trace {}

#[derive(Debug, Clone, PartialEq)]
enum A {
    Log(&'static str),
    FailWith(&'static str),
}

#[async_trait]
impl FsmAction for A {
    type Context = Trace;
    async fn execute(&self, ctx: &mut Trace) -> Result<(), FsmError> {
        match self {
            A::FailWith(why) => Err(FsmError::action(why)),
            other => {
                ctx.ran.push(other.clone());
                Ok(())
            }
        }
    }
}

fn machine() -> StateMachine<S, E, Trace, A> {
    fsm! {
        state: S; event: E; context: Trace; action: A; initial: S::Idle;

        state S::Idle {
            on E::Start => [S::Busy] |_s, _e, _c| Box::pin(async {
                Ok(Transition::to(S::Busy { jobs: 0 }).with_action(A::Log("start")))
            });
            on_entry => |_s, c| { c.hooks_seen.push("enter Idle".into()); vec![A::Log("enter Idle")] };
            on_exit => |_s, _c| vec![A::Log("exit Idle")];
        }
        state S::Busy {
            // Self-transition: same variant, new data.
            on E::Work => |s, _e, _c| {
                let S::Busy { jobs } = s else { unreachable!() };
                let jobs = *jobs + 1;
                Box::pin(async move { Ok(Transition::to(S::Busy { jobs }).with_action(A::Log("work"))) })
            };
            on E::Stop => [S::Done] |_s, _e, _c| Box::pin(async {
                Ok(Transition::to(S::Done).with_action(A::Log("stop")))
            });
            // Claims it can only reach Done, then lies: the machine must refuse.
            on E::Stray => [S::Done] |_s, _e, _c| Box::pin(async { Ok(Transition::to(S::Idle)) });
            on_entry => |_s, _c| vec![A::Log("enter Busy")];
            on_exit => |_s, _c| vec![A::Log("exit Busy")];
            timeout Duration::from_secs(10) => |_s, _c| Box::pin(async {
                Ok(Transition::to(S::Broken("stuck".into())).with_action(A::Log("timeout")))
            });
        }
        state S::Broken {
            on E::Start => |_s, _e, _c| Box::pin(async { Err(FsmError::handler("cannot restart a broken machine")) });
            timeout Duration::from_millis(500);
        }
        // Overrides the any-state Crash (which declares [Broken]) without declaring targets.
        state S::Done {
            on E::Crash => |_s, _e, _c| Box::pin(async { Ok(Transition::to(S::Idle)) });
        }
        state _ {
            on E::Crash => [S::Broken] |_s, e, _c| {
                let E::Crash(why) = e else { unreachable!() };
                let why = why.clone();
                Box::pin(async move { Ok(Transition::to(S::Broken(why)).with_action(A::Log("crash"))) })
            };
        }
    }
}

async fn run(m: &mut StateMachine<S, E, Trace, A>, e: E, ctx: &mut Trace) -> Result<(), FsmError> {
    let actions = m.handle(e, ctx).await?;
    m.execute_actions(actions, ctx).await
}

#[tokio::test]
async fn handle_moves_and_returns_actions_in_exit_transition_entry_order() {
    let mut m = machine();
    let mut ctx = Trace::default();
    let actions = m.handle(E::Start, &mut ctx).await.unwrap();
    // The initial state's entry comes first (the host never called `enter`).
    assert_eq!(
        actions,
        vec![
            A::Log("enter Idle"),
            A::Log("exit Idle"),
            A::Log("start"),
            A::Log("enter Busy")
        ]
    );
    assert_eq!(m.state(), &S::Busy { jobs: 0 });
    m.execute_actions(actions.clone(), &mut ctx).await.unwrap();
    assert_eq!(ctx.ran, actions);
}

#[tokio::test]
async fn enter_runs_the_initial_entry_hook_once() {
    let mut m = machine();
    let mut ctx = Trace::default();
    assert_eq!(m.enter(&mut ctx), vec![A::Log("enter Idle")]);
    assert!(m.enter(&mut ctx).is_empty());
    let actions = m.handle(E::Start, &mut ctx).await.unwrap();
    assert_eq!(actions[0], A::Log("exit Idle"));
    assert_eq!(ctx.hooks_seen, vec!["enter Idle".to_string()]);
}

#[tokio::test]
async fn self_transitions_run_no_hooks() {
    let mut m = machine();
    let mut ctx = Trace::default();
    run(&mut m, E::Start, &mut ctx).await.unwrap();
    let actions = m.handle(E::Work, &mut ctx).await.unwrap();
    assert_eq!(actions, vec![A::Log("work")]);
    run(&mut m, E::Work, &mut ctx).await.unwrap();
    assert_eq!(m.state(), &S::Busy { jobs: 2 });
}

#[tokio::test]
async fn unhandled_event_is_a_typed_error_and_keeps_the_state() {
    let mut m = machine();
    let mut ctx = Trace::default();
    let err = m.handle(E::Work, &mut ctx).await.unwrap_err();
    assert_eq!(
        err,
        FsmError::UnhandledEvent {
            state: "Idle",
            event: "Work"
        }
    );
    assert_eq!(m.state(), &S::Idle);
    // Pending initial entry actions are not lost by the failed call.
    let actions = m.handle(E::Start, &mut ctx).await.unwrap();
    assert_eq!(actions[0], A::Log("enter Idle"));
}

#[tokio::test]
async fn any_state_clause_catches_events_a_state_does_not_handle() {
    for start in [vec![], vec![E::Start]] {
        let mut m = machine();
        let mut ctx = Trace::default();
        for e in start {
            run(&mut m, e, &mut ctx).await.unwrap();
        }
        run(&mut m, E::Crash("disk".into()), &mut ctx)
            .await
            .unwrap();
        assert_eq!(m.state(), &S::Broken("disk".into()));
    }
}

#[tokio::test]
async fn a_state_handler_overrides_the_any_state_one_and_its_targets() {
    let mut m = machine();
    let mut ctx = Trace::default();
    for e in [E::Start, E::Stop, E::Crash("ignored".into())] {
        run(&mut m, e, &mut ctx).await.unwrap();
    }
    assert_eq!(m.state(), &S::Idle);
}

#[tokio::test]
async fn handler_errors_name_state_and_event() {
    let mut m = machine();
    let mut ctx = Trace::default();
    run(&mut m, E::Crash("x".into()), &mut ctx).await.unwrap();
    let err = m.handle(E::Start, &mut ctx).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "handler for event `Start` in state `Broken` failed: cannot restart a broken machine"
    );
    assert_eq!(m.state(), &S::Broken("x".into()));
}

#[tokio::test]
async fn undeclared_targets_are_refused() {
    let mut m = machine();
    let mut ctx = Trace::default();
    run(&mut m, E::Start, &mut ctx).await.unwrap();
    let err = m.handle(E::Stray, &mut ctx).await.unwrap_err();
    assert_eq!(
        err,
        FsmError::UndeclaredTarget {
            state: "Busy",
            event: "Stray",
            target: "Idle",
            declared: &["Done"]
        }
    );
    assert_eq!(m.state(), &S::Busy { jobs: 0 });
}

#[tokio::test]
async fn a_failing_action_drops_the_rest_and_says_so() {
    let m = machine();
    let mut ctx = Trace::default();
    let actions = vec![
        A::Log("one"),
        A::FailWith("boom"),
        A::Log("never"),
        A::Log("never either"),
    ];
    let err = m.execute_actions(actions, &mut ctx).await.unwrap_err();
    assert_eq!(
        err,
        FsmError::ActionFailed {
            index: 1,
            total: 4,
            dropped: 2,
            message: "boom".into()
        }
    );
    assert_eq!(ctx.ran, vec![A::Log("one")]);
}

#[tokio::test(start_paused = true)]
async fn timeout_handler_fires_after_the_declared_duration() {
    let mut m = machine();
    let mut ctx = Trace::default();
    assert_eq!(m.deadline(), None);
    run(&mut m, E::Start, &mut ctx).await.unwrap();
    let entered = tokio::time::Instant::now();
    assert_eq!(m.deadline(), Some(entered + Duration::from_secs(10)));
    assert_eq!(m.state_timeout(), Some(Duration::from_secs(10)));

    // A self-transition keeps the timer running.
    tokio::time::advance(Duration::from_secs(4)).await;
    run(&mut m, E::Work, &mut ctx).await.unwrap();
    assert_eq!(m.deadline(), Some(entered + Duration::from_secs(10)));
    assert!(!m.is_timed_out());

    m.wait_deadline().await;
    assert_eq!(
        tokio::time::Instant::now(),
        entered + Duration::from_secs(10)
    );
    assert!(m.is_timed_out());
    let actions = m.handle_timeout(&mut ctx).await.unwrap();
    assert_eq!(actions, vec![A::Log("exit Busy"), A::Log("timeout")]);
    assert_eq!(m.state(), &S::Broken("stuck".into()));
    // Broken has its own, handler-less timeout.
    assert_eq!(
        m.deadline(),
        Some(tokio::time::Instant::now() + Duration::from_millis(500))
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_without_handler_is_an_error_and_rearms() {
    let mut m = machine();
    let mut ctx = Trace::default();
    run(&mut m, E::Crash("x".into()), &mut ctx).await.unwrap();
    m.wait_deadline().await;
    let err = m.handle_timeout(&mut ctx).await.unwrap_err();
    assert_eq!(
        err,
        FsmError::Timeout {
            state: "Broken",
            after: Duration::from_millis(500)
        }
    );
    assert_eq!(m.state(), &S::Broken("x".into()));
    // The timer restarted, so a host waiting on it does not spin.
    assert!(!m.is_timed_out());
    assert_eq!(
        m.deadline(),
        Some(tokio::time::Instant::now() + Duration::from_millis(500))
    );
}

#[tokio::test(start_paused = true)]
async fn states_without_timeout_never_fire() {
    let mut m = machine();
    let mut ctx = Trace::default();
    assert_eq!(
        m.handle_timeout(&mut ctx).await.unwrap_err(),
        FsmError::NoTimeout { state: "Idle" }
    );
    let waited = tokio::time::timeout(Duration::from_secs(3600), m.wait_deadline()).await;
    assert!(
        waited.is_err(),
        "wait_deadline completed without a deadline"
    );
}

#[tokio::test]
async fn unhandled_hook_replaces_the_default_error() {
    fn lenient() -> StateMachine<S, E, Trace, A> {
        fsm! {
            state: S; event: E; context: Trace; action: A; initial: S::Idle;
            state S::Idle {
                on E::Start => |_s, _e, _c| Box::pin(async { Ok(Transition::to(S::Done)) });
            }
            // Stay put and log, except for crashes, which stay errors.
            unhandled => |s, e, _c| {
                let (state, event) = (s.clone(), e.clone());
                Box::pin(async move {
                    match event {
                        E::Crash(_) => Err(FsmError::unhandled(state.variant_name(), event.variant_name())),
                        _ => Ok(Transition::to(state).with_action(A::Log("ignored"))),
                    }
                })
            };
        }
    }
    let mut m = lenient();
    let mut ctx = Trace::default();
    assert_eq!(
        m.handle(E::Work, &mut ctx).await.unwrap(),
        vec![A::Log("ignored")]
    );
    assert_eq!(m.state(), &S::Idle);
    assert!(matches!(
        m.handle(E::Crash("x".into()), &mut ctx).await,
        Err(FsmError::UnhandledEvent { .. })
    ));
    assert!(m.table().has_unhandled_hook);
}

#[tokio::test]
async fn introspection_exposes_the_declared_table() {
    let m = machine();
    let t = m.table();
    assert_eq!(t.states, &["Idle", "Busy", "Broken", "Done"]);
    assert_eq!(t.events, &["Start", "Work", "Stop", "Stray", "Crash"]);
    assert_eq!(t.entry_hooks, &["Idle", "Busy"]);
    assert_eq!(t.exit_hooks, &["Idle", "Busy"]);
    assert!(t.handles("Busy", "Work"));
    assert!(!t.handles("Idle", "Work"));
    assert!(t.handles_in_any_state("Crash"));
    let busy = t.timeout_of("Busy").unwrap();
    assert_eq!(busy.after, Duration::from_secs(10));
    assert!(busy.has_handler);
    assert!(!t.timeout_of("Broken").unwrap().has_handler);
    assert_eq!(m.initial_state_name(), "Idle");
    assert_eq!(S::VARIANTS, &["Idle", "Busy", "Broken", "Done"]);
    assert_eq!(E::Crash("x".into()).variant_name(), "Crash");
}

#[tokio::test]
async fn mermaid_diagram_draws_declared_targets_and_lists_the_rest() {
    let expected = "\
stateDiagram-v2
    [*] --> Idle
    Idle --> Busy : Start
    Idle --> Broken : Crash
    Idle : entry / actions
    Idle : exit / actions
    Busy : on Work
    Busy --> Done : Stop
    Busy --> Done : Stray
    Busy --> Broken : Crash
    Busy : entry / actions
    Busy : exit / actions
    Busy : after 10s / handler
    Broken : on Start
    Broken --> Broken : Crash
    Broken : after 500ms / error
    Done : on Crash
";
    assert_eq!(machine().to_mermaid(), expected);
}

#[test]
fn machines_are_send_so_actors_can_own_them() {
    fn assert_send<T: Send>() {}
    assert_send::<StateMachine<S, E, Trace, A>>();
}
