// Shared types of the compile-fail cases (included, not compiled on its own).
#[allow(unused_imports)]
use troupe::fsm::{
    fsm, EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
pub enum OrderState {
    Pending,
    Failed(String),
}

#[derive(Debug, Clone, EventVariant)]
pub enum OrderEvent {
    Fail(String),
    Pay,
}

pub struct Ctx;
impl FsmContext for Ctx {}

#[derive(Debug)]
pub enum OrderAction {
    Alert,
}

#[async_trait::async_trait]
impl FsmAction for OrderAction {
    type Context = Ctx;
    async fn execute(&self, _: &mut Ctx) -> Result<(), FsmError> {
        Ok(())
    }
}

pub type Machine = StateMachine<OrderState, OrderEvent, Ctx, OrderAction>;
