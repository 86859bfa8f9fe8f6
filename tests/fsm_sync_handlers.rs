//! Synchronous handlers (`sync |s, e, c| ...`): they run without a future,
//! through `handle` and `handle_now` alike, next to async handlers in one
//! machine; and a machine may leave out `action:`.

use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, NoAction, StateMachine, StateVariant,
    Transition, fsm,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum S {
    Idle,
    Busy { jobs: u32 },
    Failed(String),
    Done,
}

#[derive(Debug, Clone, EventVariant)]
enum E {
    Start,
    Work,
    Slow,
    Stop,
    Fail(String),
    Stray,
}

#[derive(Default, Debug)]
struct Log {
    ran: Vec<String>,
}
impl FsmContext for Log {}

#[derive(Debug, Clone, PartialEq)]
enum Act {
    Note(&'static str),
}

#[async_trait]
impl FsmAction for Act {
    type Context = Log;
    async fn execute(&self, ctx: &mut Log) -> Result<(), FsmError> {
        let Act::Note(what) = self;
        ctx.ran.push(format!("later {what}"));
        Ok(())
    }
    fn execute_now(&self, ctx: &mut Log) -> Option<Result<(), FsmError>> {
        let Act::Note(what) = self;
        ctx.ran.push(format!("now {what}"));
        Some(Ok(()))
    }
}

/// Sync and async handlers mixed, with hooks, a sync timeout and a sync
/// any-state clause.
fn mixed() -> StateMachine<S, E, Log, Act> {
    fsm! {
        state: S; event: E; context: Log; action: Act; initial: S::Idle;
        terminal: S::Done;
        state S::Idle {
            on E::Start => [S::Busy] sync |_, _, _| {
                Transition::to(S::Busy { jobs: 0 }).with_action(Act::Note("started"))
            };
            on_exit => |_, _| vec![Act::Note("leave idle")];
        }
        state S::Busy {
            // Returns a `Result`: may fail, like an async handler.
            on E::Work => [S::Busy] sync |s, _, c| {
                let S::Busy { jobs } = s else { unreachable!() };
                if *jobs >= 2 {
                    return Err(FsmError::handler("too busy"));
                }
                c.ran.push(format!("work {jobs}"));
                Ok(Transition::to(S::Busy { jobs: jobs + 1 }))
            };
            on E::Slow => |s, _, _| {
                let S::Busy { jobs } = *s else { unreachable!() };
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    Ok(Transition::to(S::Busy { jobs: jobs + 10 }))
                })
            };
            on E::Stop => [S::Done] sync |_, _, _| Transition::to(S::Done);
            on_entry => |_, _| vec![Act::Note("enter busy")];
            timeout Duration::from_secs(5) => [S::Idle] sync |_, c| {
                c.ran.push("timed out".into());
                Transition::to(S::Idle)
            };
        }
        state S::Done {}
        state _ {
            on E::Fail => [S::Failed] sync |_, e, _| {
                let E::Fail(why) = e else { unreachable!() };
                Transition::to(S::Failed(why.clone()))
            };
        }
    }
}

#[tokio::test]
async fn sync_handlers_run_through_handle_with_hooks_in_order() {
    let mut m = mixed();
    let mut log = Log::default();
    let actions = m.handle(E::Start, &mut log).await.unwrap();
    assert_eq!(
        actions,
        [
            Act::Note("leave idle"),
            Act::Note("started"),
            Act::Note("enter busy")
        ]
    );
    m.execute_actions(actions, &mut log).await.unwrap();
    assert_eq!(m.state(), &S::Busy { jobs: 0 });
    assert!(m.deadline().is_some(), "entering Busy arms its timer");
    m.handle(E::Work, &mut log).await.unwrap();
    assert_eq!(m.state(), &S::Busy { jobs: 1 });
    assert_eq!(
        log.ran,
        ["now leave idle", "now started", "now enter busy", "work 0"]
    );
}

#[tokio::test]
async fn handle_now_runs_sync_clauses_and_leaves_async_ones_untouched() {
    let mut m = mixed();
    let mut log = Log::default();
    let actions = m.handle_now(&E::Start, &mut log).expect("sync").unwrap();
    assert_eq!(actions.len(), 3);
    // `Slow` is async: not run, nothing changed.
    assert!(m.handle_now(&E::Slow, &mut log).is_none());
    assert_eq!(m.state(), &S::Busy { jobs: 0 });
    // ... and `handle` runs it.
    m.handle(E::Slow, &mut log).await.unwrap();
    assert_eq!(m.state(), &S::Busy { jobs: 10 });
    // A sync failure is located like an async one; the state stays.
    let err = m.handle_now(&E::Work, &mut log).expect("sync").unwrap_err();
    assert_eq!(
        err,
        FsmError::HandlerFailed {
            state: "Busy",
            event: "Work",
            message: "too busy".into()
        }
    );
    assert_eq!(m.state(), &S::Busy { jobs: 10 });
    // Nothing handles `Stray`: decided at once.
    let err = m.handle_now(&E::Stray, &mut log).expect("decided");
    assert_eq!(err, Err(FsmError::unhandled("Busy", "Stray")));
    // The any-state clause is sync too.
    m.handle_now(&E::Fail("disk".into()), &mut log)
        .expect("sync")
        .unwrap();
    assert_eq!(m.state(), &S::Failed("disk".into()));
}

#[tokio::test]
async fn sync_timeout_handlers_fire_with_and_without_a_future() {
    let mut m = mixed();
    let mut log = Log::default();
    assert_eq!(
        m.handle_timeout_now(&mut log),
        Some(Err(FsmError::NoTimeout { state: "Idle" }))
    );
    m.handle_now(&E::Start, &mut log).unwrap().unwrap();
    let actions = m.handle_timeout_now(&mut log).expect("sync").unwrap();
    assert_eq!(
        actions,
        [] as [Act; 0],
        "Busy has no exit hook, Idle no entry hook"
    );
    assert_eq!(m.state(), &S::Idle);
    m.handle(E::Start, &mut log).await.unwrap();
    m.handle_timeout(&mut log).await.unwrap();
    assert_eq!(m.state(), &S::Idle);
    assert_eq!(log.ran.iter().filter(|r| *r == "timed out").count(), 2);
}

#[tokio::test]
async fn declared_targets_bind_sync_handlers_timeouts_and_the_unhandled_hook() {
    let mut m: StateMachine<S, E, Log, Act> = fsm! {
        state: S; event: E; context: Log; action: Act; initial: S::Idle;
        state S::Idle {
            on E::Start => [S::Busy] sync |_, _, _| Transition::to(S::Done);
            timeout Duration::from_secs(1) => [S::Busy] sync |_, _| Transition::to(S::Done);
        }
        unhandled => [S::Failed] sync |_, e, _| Transition::to(S::Failed(e.variant_name().into()));
    };
    let mut log = Log::default();
    let undeclared = |event, target| FsmError::UndeclaredTarget {
        state: "Idle",
        event,
        target,
        declared: &["Busy"],
    };
    assert_eq!(
        m.handle(E::Start, &mut log).await,
        Err(undeclared("Start", "Done"))
    );
    assert_eq!(
        m.handle_timeout(&mut log).await,
        Err(undeclared("<timeout>", "Done"))
    );
    assert_eq!(m.state(), &S::Idle);
    m.handle_now(&E::Stray, &mut log).unwrap().unwrap();
    assert_eq!(m.state(), &S::Failed("Stray".into()));
}

#[tokio::test]
async fn an_unhandled_hook_that_declares_its_targets_is_held_to_them() {
    let mut m: StateMachine<S, E, Log, Act> = fsm! {
        state: S; event: E; context: Log; action: Act; initial: S::Idle;
        state S::Idle {}
        unhandled => [S::Idle] |_, _, _| Box::pin(async { Ok(Transition::to(S::Done)) });
    };
    let err = m.handle(E::Stray, &mut Log::default()).await.unwrap_err();
    assert!(matches!(
        err,
        FsmError::UndeclaredTarget { target: "Done", .. }
    ));
}

/// No `action:` key: the machine's actions are `NoAction<C>`.
fn without_actions() -> StateMachine<S, E, Count, NoAction<Count>> {
    fsm! {
        state: S; event: E; context: Count; initial: S::Idle;
        state S::Idle {
            on E::Start => [S::Busy] sync |_, _, n| {
                n.0 += 1;
                Transition::to(S::Busy { jobs: n.0 })
            };
        }
        state S::Busy {
            on E::Stop => [S::Idle] |_, _, _| Box::pin(async { Ok(Transition::to(S::Idle)) });
        }
    }
}

/// How many times something ran.
#[derive(Debug, Default, PartialEq, Clone, Copy)]
struct Count(u32);
impl FsmContext for Count {}

#[tokio::test]
async fn a_machine_without_actions_runs_sync_and_async_handlers() {
    let mut m = without_actions();
    let mut started = Count(0);
    for round in 1..=3 {
        let actions = m.handle_now(&E::Start, &mut started).unwrap().unwrap();
        assert!(actions.is_empty());
        assert_eq!(m.state(), &S::Busy { jobs: round });
        let actions = m.handle(E::Stop, &mut started).await.unwrap();
        m.execute_actions(actions, &mut started).await.unwrap();
        assert_eq!(m.state(), &S::Idle);
    }
    assert_eq!(started, Count(3));
}

#[test]
fn a_sync_handler_may_use_question_mark_with_an_annotated_result() {
    fn parse(e: &E) -> Result<u32, FsmError> {
        match e {
            E::Fail(n) => n.parse().map_err(FsmError::handler),
            _ => Ok(0),
        }
    }
    let mut m: StateMachine<S, E, (), NoAction<()>> = fsm! {
        state: S; event: E; context: (); initial: S::Idle;
        state S::Idle {
            on E::Fail => sync |_, e, _| -> Result<Transition<S, NoAction<()>>, FsmError> {
                let jobs = parse(e)?;
                Ok(Transition::to(S::Busy { jobs }))
            };
        }
    };
    let err = m.handle_now(&E::Fail("x".into()), &mut ()).unwrap();
    assert!(matches!(
        err,
        Err(FsmError::HandlerFailed { event: "Fail", .. })
    ));
    m.handle_now(&E::Fail("7".into()), &mut ())
        .unwrap()
        .unwrap();
    assert_eq!(m.state(), &S::Busy { jobs: 7 });
}

/// The same counter machine twice: once with sync handlers, once with
/// async ones. Each event moves both the same way.
fn counter(sync: bool) -> StateMachine<S, E, Count, NoAction<Count>> {
    if sync {
        fsm! {
            state: S; event: E; context: Count; initial: S::Idle;
            state S::Idle { on E::Start => sync |_, _, _| Transition::to(S::Busy { jobs: 0 }); }
            state S::Busy {
                on E::Work => sync |s, _, n| {
                    let S::Busy { jobs } = s else { unreachable!() };
                    n.0 += 1;
                    if *jobs == 3 { Err(FsmError::handler("full")) } else { Ok(Transition::to(S::Busy { jobs: jobs + 1 })) }
                };
                on E::Stop => sync |_, _, _| Transition::to(S::Done);
            }
            state _ { on E::Fail => sync |_, _, _| Transition::to(S::Idle); }
        }
    } else {
        fsm! {
            state: S; event: E; context: Count; initial: S::Idle;
            state S::Idle { on E::Start => |_, _, _| Box::pin(async { Ok(Transition::to(S::Busy { jobs: 0 })) }); }
            state S::Busy {
                on E::Work => |s, _, n| {
                    let S::Busy { jobs } = *s else { unreachable!() };
                    n.0 += 1;
                    Box::pin(async move {
                        if jobs == 3 { Err(FsmError::handler("full")) } else { Ok(Transition::to(S::Busy { jobs: jobs + 1 })) }
                    })
                };
                on E::Stop => |_, _, _| Box::pin(async { Ok(Transition::to(S::Done)) });
            }
            state _ { on E::Fail => |_, _, _| Box::pin(async { Ok(Transition::to(S::Idle)) }); }
        }
    }
}

fn event() -> impl Strategy<Value = E> {
    prop_oneof![
        Just(E::Start),
        Just(E::Work),
        Just(E::Stop),
        Just(E::Fail(String::new())),
        Just(E::Stray),
    ]
}

proptest! {
    #[test]
    fn sync_and_async_forms_of_one_machine_agree(events in prop::collection::vec(event(), 0..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (mut sync, mut asynch) = (counter(true), counter(false));
        let (mut sync_ctx, mut async_ctx) = (Count(0), Count(0));
        for event in events {
            let now = sync.handle_now(&event, &mut sync_ctx).expect("every clause is sync");
            let later = rt.block_on(asynch.handle(event.clone(), &mut async_ctx));
            prop_assert!(asynch.handle_now(&event, &mut async_ctx).is_none_or(|r| r.is_err()),
                "an async clause is never run by handle_now");
            prop_assert_eq!(now.map(|a| a.len()), later.map(|a| a.len()));
            prop_assert_eq!(sync.state(), asynch.state());
            prop_assert_eq!(sync_ctx, async_ctx);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn handle_timeout_now_leaves_an_async_timeout_handler_to_handle_timeout() {
    let mut m: StateMachine<S, E, Log, Act> = fsm! {
        state: S; event: E; context: Log; action: Act; initial: S::Idle;
        state S::Idle {
            on E::Start => [S::Busy] sync |_, _, _| Transition::to(S::Busy { jobs: 0 });
            timeout Duration::from_secs(1) => [S::Done] |_, _| Box::pin(async { Ok(Transition::to(S::Done)) });
        }
    };
    let mut log = Log::default();
    let deadline = m.deadline();
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(m.handle_timeout_now(&mut log).is_none());
    assert_eq!(
        m.deadline(),
        deadline,
        "not fired: the timer is not restarted"
    );
    m.handle_timeout(&mut log).await.unwrap();
    assert_eq!(m.state(), &S::Done);

    // A timeout without a handler is decided at once.
    let mut busy: StateMachine<S, E, Log, Act> = fsm! {
        state: S; event: E; context: Log; action: Act; initial: S::Busy { jobs: 0 };
        state S::Busy { timeout Duration::from_secs(2); }
    };
    assert_eq!(
        busy.handle_timeout_now(&mut log),
        Some(Err(FsmError::Timeout {
            state: "Busy",
            after: Duration::from_secs(2)
        }))
    );
}

#[tokio::test(start_paused = true)]
async fn resume_puts_the_machine_in_a_state_without_hooks_and_keeps_a_given_deadline() {
    let mut m = mixed();
    let mut log = Log::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    m.resume(S::Busy { jobs: 1 }, Some(deadline));
    assert_eq!(
        (m.state(), m.deadline()),
        (&S::Busy { jobs: 1 }, Some(deadline))
    );
    // Neither the initial state's nor Busy's entry hook runs, then or later.
    assert!(m.enter(&mut log).is_empty());
    m.handle(E::Work, &mut log).await.unwrap();
    assert_eq!(log.ran, ["work 1"]);
    // Without a deadline the state's timer is armed anew; a state without
    // a timeout has none, whatever it is given.
    m.resume(S::Busy { jobs: 0 }, None);
    let armed = tokio::time::Instant::now() + Duration::from_secs(5);
    assert_eq!(m.deadline(), Some(armed));
    m.resume(S::Idle, Some(deadline));
    assert_eq!(m.deadline(), None);
}
