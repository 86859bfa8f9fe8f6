//! Property: random event sequences drive an `fsm!` machine exactly like a
//! reference model written as a plain `match`.

use async_trait::async_trait;
use proptest::prelude::*;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, StateVariant)]
enum Gate {
    Locked,
    Open { passes: u8 },
    Jammed,
}

#[derive(Debug, Clone, Copy, EventVariant)]
enum Ev {
    Coin,
    Push,
    Kick,
    Fix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Unlock,
    Lock,
    Beep,
    Enter(&'static str),
    Leave(&'static str),
}

struct NoCtx;
impl FsmContext for NoCtx {}

#[async_trait]
impl FsmAction for Act {
    type Context = NoCtx;
    async fn execute(&self, _: &mut NoCtx) -> Result<(), FsmError> {
        Ok(())
    }
}

fn gate() -> StateMachine<Gate, Ev, NoCtx, Act> {
    fsm! {
        state: Gate; event: Ev; context: NoCtx; action: Act; initial: Gate::Locked;
        state Gate::Locked {
            on Ev::Coin => |_, _, _| Box::pin(async {
                Ok(Transition::to(Gate::Open { passes: 0 }).with_action(Act::Unlock))
            });
            on Ev::Push => |s, _, _| { let s = *s; Box::pin(async move { Ok(Transition::to(s).with_action(Act::Beep)) }) };
        }
        state Gate::Open {
            on Ev::Push => |s, _, _| {
                let Gate::Open { passes } = *s else { unreachable!() };
                Box::pin(async move {
                    Ok(if passes >= 2 {
                        Transition::to(Gate::Locked).with_action(Act::Lock)
                    } else {
                        Transition::to(Gate::Open { passes: passes + 1 })
                    })
                })
            };
            on_entry => |_, _| vec![Act::Enter("Open")];
            on_exit => |_, _| vec![Act::Leave("Open")];
        }
        state Gate::Jammed {
            on Ev::Fix => |_, _, _| Box::pin(async { Ok(Transition::to(Gate::Locked)) });
            on Ev::Kick => |_, _, _| Box::pin(async { Err(FsmError::handler("kicking a jammed gate")) });
            on_entry => |_, _| vec![Act::Enter("Jammed")];
        }
        state _ {
            on Ev::Kick => |_, _, _| Box::pin(async { Ok(Transition::to(Gate::Jammed).with_action(Act::Beep)) });
        }
    }
}

/// The reference: what the machine above must do, as a plain match.
fn model(state: Gate, event: Ev) -> Result<(Gate, Vec<Act>), &'static str> {
    use Act::*;
    let hooks = |from: Gate, to: Gate, mid: Vec<Act>| {
        if std::mem::discriminant(&from) == std::mem::discriminant(&to) {
            return mid;
        }
        let mut all = Vec::new();
        if matches!(from, Gate::Open { .. }) {
            all.push(Leave("Open"));
        }
        all.extend(mid);
        match to {
            Gate::Open { .. } => all.push(Enter("Open")),
            Gate::Jammed => all.push(Enter("Jammed")),
            Gate::Locked => {}
        }
        all
    };
    let (next, mid) = match (state, event) {
        (Gate::Locked, Ev::Coin) => (Gate::Open { passes: 0 }, vec![Unlock]),
        (Gate::Locked, Ev::Push) => (Gate::Locked, vec![Beep]),
        (Gate::Open { passes }, Ev::Push) if passes >= 2 => (Gate::Locked, vec![Lock]),
        (Gate::Open { passes }, Ev::Push) => (Gate::Open { passes: passes + 1 }, vec![]),
        (Gate::Jammed, Ev::Fix) => (Gate::Locked, vec![]),
        (Gate::Jammed, Ev::Kick) => return Err("handler"),
        (_, Ev::Kick) => (Gate::Jammed, vec![Beep]),
        _ => return Err("unhandled"),
    };
    Ok((next, hooks(state, next, mid)))
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        Just(Ev::Coin),
        Just(Ev::Push),
        Just(Ev::Kick),
        Just(Ev::Fix)
    ]
}

proptest! {
    #[test]
    fn machine_agrees_with_the_reference_model(events in prop::collection::vec(event(), 0..64)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut machine = gate();
            let mut ctx = NoCtx;
            prop_assert!(machine.enter(&mut ctx).is_empty());
            let mut expected = Gate::Locked;
            for e in events {
                let got = machine.handle(e, &mut ctx).await;
                match (model(expected, e), got) {
                    (Ok((next, actions)), Ok(got_actions)) => {
                        prop_assert_eq!(got_actions, actions);
                        expected = next;
                    }
                    (Err("handler"), Err(FsmError::HandlerFailed { state, event, .. })) => {
                        prop_assert_eq!((state, event), ("Jammed", "Kick"));
                    }
                    (Err("unhandled"), Err(FsmError::UnhandledEvent { state, event })) => {
                        prop_assert_eq!(state, expected.variant_name());
                        prop_assert_eq!(event, e.variant_name());
                    }
                    (want, got) => prop_assert!(false, "model {want:?} but machine {got:?} on {e:?}"),
                }
                prop_assert_eq!(*machine.state(), expected);
            }
            Ok(())
        })?;
    }
}
