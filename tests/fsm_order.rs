//! The exact `fsm!` form the foundation issue specifies, end to end.

use async_trait::async_trait;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum OrderState {
    Pending,
    Failed(String),
}

#[derive(Debug, Clone, EventVariant)]
enum OrderEvent {
    Fail(String),
    #[allow(dead_code)]
    Ship,
}

#[derive(Default)]
struct Ctx {
    alerts: usize,
}
impl FsmContext for Ctx {}

#[derive(Debug, PartialEq)]
enum OrderAction {
    Alert,
}

#[async_trait]
impl FsmAction for OrderAction {
    type Context = Ctx;
    async fn execute(&self, ctx: &mut Ctx) -> Result<(), FsmError> {
        ctx.alerts += 1;
        Ok(())
    }
}

fn build(initial: OrderState) -> StateMachine<OrderState, OrderEvent, Ctx, OrderAction> {
    fsm! {
        state: OrderState;
        event: OrderEvent;
        context: Ctx;
        action: OrderAction;
        initial: initial;

        state OrderState::Pending {
            on OrderEvent::Fail => |_s: &OrderState, e: &OrderEvent, _c: &mut Ctx| {
                let msg = match e { OrderEvent::Fail(m) => m.clone(), _ => unreachable!() };
                Box::pin(async move {
                    Ok(Transition { next_state: OrderState::Failed(msg), actions: vec![OrderAction::Alert] })
                })
            };
        }
        state OrderState::Failed {
            on OrderEvent::Fail => |s: &OrderState, _e: &OrderEvent, _c: &mut Ctx| {
                let s = s.clone();
                Box::pin(async move { Ok(Transition { next_state: s, actions: vec![] }) })
            };
        }
    }
}

#[tokio::test]
async fn the_specified_form_compiles_and_works() {
    let mut machine = build(OrderState::Pending);
    let mut ctx = Ctx::default();
    let actions = machine
        .handle(OrderEvent::Fail("card declined".into()), &mut ctx)
        .await
        .unwrap();
    assert_eq!(actions, vec![OrderAction::Alert]);
    assert_eq!(machine.state(), &OrderState::Failed("card declined".into()));
    machine.execute_actions(actions, &mut ctx).await.unwrap();
    assert_eq!(ctx.alerts, 1);

    // Failed handles Fail by staying where it is, with no actions.
    let actions = machine
        .handle(OrderEvent::Fail("again".into()), &mut ctx)
        .await
        .unwrap();
    assert!(actions.is_empty());
    assert_eq!(machine.state(), &OrderState::Failed("card declined".into()));
}

#[tokio::test]
async fn the_table_lists_what_was_declared() {
    let machine = build(OrderState::Pending);
    let table = machine.table();
    assert_eq!(table.states, &["Pending", "Failed"]);
    assert_eq!(table.events, &["Fail"]);
    assert!(table.handles("Pending", "Fail"));
    assert!(table.handles("Failed", "Fail"));
    assert_eq!(table.state_type, "OrderState");
    assert_eq!(
        machine.to_mermaid(),
        "stateDiagram-v2\n    [*] --> Pending\n    Pending : on Fail\n    Failed : on Fail\n"
    );
}
