//! `FsmAction::execute_now`: actions that answer it run without their
//! `execute` future; the others are awaited as before, in one ordered batch.

use async_trait::async_trait;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum S {
    On,
}

#[derive(Debug, Clone, EventVariant)]
enum E {
    Go,
}

/// Which path ran each action, in order.
#[derive(Default)]
struct Ran {
    log: Vec<String>,
}
impl FsmContext for Ran {}

enum Act {
    /// Answers `execute_now`.
    Now(&'static str),
    /// Leaves itself to `execute`, which really awaits.
    Later(&'static str),
    /// Fails in `execute_now`.
    FailNow(&'static str),
}

#[async_trait]
impl FsmAction for Act {
    type Context = Ran;
    async fn execute(&self, ctx: &mut Ran) -> Result<(), FsmError> {
        tokio::task::yield_now().await;
        let name = match self {
            Act::Now(name) | Act::Later(name) | Act::FailNow(name) => name,
        };
        ctx.log.push(format!("execute {name}"));
        Ok(())
    }

    fn execute_now(&self, ctx: &mut Ran) -> Option<Result<(), FsmError>> {
        match self {
            Act::Now(name) => {
                ctx.log.push(format!("now {name}"));
                Some(Ok(()))
            }
            Act::Later(_) => None,
            Act::FailNow(why) => Some(Err(FsmError::action(why))),
        }
    }
}

fn machine() -> StateMachine<S, E, Ran, Act> {
    fsm! {
        state: S; event: E; context: Ran; action: Act; initial: S::On;
        state S::On {
            on E::Go => |_s, _e, _c| Box::pin(async {
                Ok(Transition::to(S::On)
                    .with_action(Act::Now("a"))
                    .with_action(Act::Later("b"))
                    .with_action(Act::Now("c")))
            });
        }
    }
}

#[tokio::test]
async fn answered_actions_skip_execute_and_keep_their_place_in_the_batch() {
    let mut m = machine();
    let mut ctx = Ran::default();
    let actions = m.handle(E::Go, &mut ctx).await.unwrap();
    m.execute_actions(actions, &mut ctx).await.unwrap();
    assert_eq!(ctx.log, ["now a", "execute b", "now c"]);
}

#[tokio::test]
async fn a_failure_answered_now_drops_the_rest_like_any_other() {
    let m = machine();
    let mut ctx = Ran::default();
    let actions = vec![
        Act::Later("first"),
        Act::FailNow("no disk"),
        Act::Now("never"),
    ];
    let err = m.execute_actions(actions, &mut ctx).await.unwrap_err();
    assert_eq!(
        err,
        FsmError::ActionFailed {
            index: 1,
            total: 3,
            dropped: 1,
            message: "no disk".into()
        }
    );
    assert_eq!(ctx.log, ["execute first"]);
}
