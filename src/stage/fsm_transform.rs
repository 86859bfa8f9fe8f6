//! A transform whose per-item logic is an `fsm!` machine (the user-facing
//! docs are on [`transform_fsm`]).

use std::fmt::Debug;

use super::logic::{Emitter, Transform};
use crate::fsm::{EventVariant, FsmAction, FsmContext, StateMachine, StateVariant};
use crate::supervise::BoxError;

/// Most events one item's machine is driven with before the item fails: a
/// `next` that never says `None` is a bug, not an endless stage.
pub const MAX_EVENTS_PER_ITEM: usize = 10_000;

/// The item's machine was still being driven after [`MAX_EVENTS_PER_ITEM`] events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an item's state machine was still in state `{state}` after {MAX_EVENTS_PER_ITEM} events")]
pub struct ItemNotSettled {
    /// The state it was in.
    pub state: &'static str,
}

/// A transform driving one state machine per item; see [`transform_fsm`].
#[derive(Debug)]
pub struct FsmTransform<B, N, X> {
    build: B,
    next: N,
    emit: X,
}

/// A transform from a state machine per item: `build` makes the item's
/// machine and context, `next` names the event to feed in the current state
/// (`None` once the item is settled), `emit` turns the settled state and
/// context into output items. Each event's actions run before the next
/// event; an error of the machine (an unhandled event, a failing handler or
/// action) fails the stage like any transform error.
///
/// Each item gets a fresh machine and context, the machine is driven until
/// the item is settled, and the end state says what is emitted.
///
/// ```
/// use async_trait::async_trait;
/// use troupe::fsm::{
///     EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
/// };
/// use troupe::stage::{Emitter, transform_fsm};
///
/// #[derive(Debug, Clone, PartialEq, StateVariant)]
/// enum Check { Received, Valid, Rejected }
/// #[derive(Debug, EventVariant)]
/// enum CheckEvent { Validate }
/// struct Order { amount: u64 }
/// impl FsmContext for Order {}
/// #[derive(Debug)]
/// enum NoAction {}
/// #[async_trait]
/// impl FsmAction for NoAction {
///     type Context = Order;
///     async fn execute(&self, _: &mut Order) -> Result<(), FsmError> {
///         match *self {}
///     }
/// }
///
/// fn check() -> StateMachine<Check, CheckEvent, Order, NoAction> {
///     fsm! {
///         state: Check; event: CheckEvent; context: Order; action: NoAction;
///         initial: Check::Received;
///         state Check::Received {
///             on CheckEvent::Validate => [Check::Valid, Check::Rejected] |_, _, order| {
///                 let next = if order.amount > 0 { Check::Valid } else { Check::Rejected };
///                 Box::pin(async move { Ok(Transition::to(next)) })
///             };
///         }
///     }
/// }
///
/// let validate = |_: &troupe::stage::StageContext| transform_fsm(
///     |amount: u64| (check(), Order { amount }),
///     // The event each state is driven with; `None`: the item is settled.
///     |state: &Check, _: &Order| (*state == Check::Received).then_some(CheckEvent::Validate),
///     // What a settled item emits: valid orders go on, rejected ones do not.
///     |state: &Check, order: Order, out: &mut Emitter<u64>| {
///         if *state == Check::Valid {
///             out.push(order.amount);
///         }
///     },
/// );
/// # use troupe::flow::FlowDefinition;
/// # use troupe::stage::{sink_fn, source_iter};
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let runtime = troupe::runtime::Runtime::builder().memory().start().await?;
/// runtime.register(
///     FlowDefinition::<u64>::builder("orders")
///         .source("amounts", |_| source_iter([5_u64, 0, 7]))
///         .transform("validate", validate)
///         .sink("book", |_| sink_fn(|_: u64| Ok(())))
///         .pipeline(["amounts", "validate", "book"])
///         .build()?,
/// ).await?;
/// let outcome = runtime.start("orders").await?.wait().await?;
/// let steps = &outcome.structured_output.unwrap()["steps"];
/// assert_eq!(steps["validate"]["items_out"], 2); // the order without an amount is dropped
/// runtime.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub fn transform_fsm<T, S, E, C, A, B, N, X>(build: B, next: N, emit: X) -> FsmTransform<B, N, X>
where
    B: FnMut(T) -> (StateMachine<S, E, C, A>, C) + Send + 'static,
    N: Fn(&S, &C) -> Option<E> + Send + Sync + 'static,
    X: FnMut(&S, C, &mut Emitter<T>) + Send + 'static,
{
    FsmTransform { build, next, emit }
}

impl<T, S, E, C, A, B, N, X> Transform<T> for FsmTransform<B, N, X>
where
    T: Send + 'static,
    S: StateVariant + Debug + Send + Sync + 'static,
    E: EventVariant + Send + Sync + 'static,
    C: FsmContext + Send + Sync + 'static,
    A: FsmAction<Context = C> + Send + Sync + 'static,
    B: FnMut(T) -> (StateMachine<S, E, C, A>, C) + Send + 'static,
    N: Fn(&S, &C) -> Option<E> + Send + Sync + 'static,
    X: FnMut(&S, C, &mut Emitter<T>) + Send + 'static,
{
    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), BoxError> {
        let (mut machine, mut ctx) = (self.build)(item);
        let entered = machine.enter(&mut ctx);
        machine.execute_actions(entered, &mut ctx).await?;
        let mut fed = 0;
        while let Some(event) = (self.next)(machine.state(), &ctx) {
            if fed == MAX_EVENTS_PER_ITEM {
                let state = machine.state().variant_name();
                return Err(ItemNotSettled { state }.into());
            }
            fed += 1;
            let actions = machine.handle(event, &mut ctx).await?;
            machine.execute_actions(actions, &mut ctx).await?;
        }
        (self.emit)(machine.state(), ctx, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::fsm::{FsmError, Transition, fsm};

    #[derive(Debug, Clone, PartialEq, StateVariant)]
    enum Light {
        Off,
        On,
    }

    #[derive(Debug, EventVariant)]
    enum Flip {
        Flip,
        Jam,
    }

    /// The item, and how many actions ran on it.
    struct Bulb {
        item: u32,
        actions: u32,
    }
    impl FsmContext for Bulb {}

    #[derive(Debug)]
    struct Count;

    #[async_trait]
    impl FsmAction for Count {
        type Context = Bulb;
        async fn execute(&self, ctx: &mut Bulb) -> Result<(), FsmError> {
            ctx.actions += 1;
            Ok(())
        }
    }

    fn light() -> StateMachine<Light, Flip, Bulb, Count> {
        fsm! {
            state: Light; event: Flip; context: Bulb; action: Count;
            initial: Light::Off;
            state Light::Off {
                on Flip::Flip => [Light::On] |_, _, _| {
                    Box::pin(async { Ok(Transition::to(Light::On).with_action(Count)) })
                };
            }
            state Light::On {
                on Flip::Flip => [Light::Off] |_, _, _| {
                    Box::pin(async { Ok(Transition::to(Light::Off).with_action(Count)) })
                };
            }
        }
    }

    /// Flips each item `item` times; emits the item times 10 plus the
    /// actions run if the light ends on.
    fn flipper(
        next: impl Fn(&Light, &Bulb) -> Option<Flip> + Send + Sync + 'static,
    ) -> impl Transform<u32> {
        transform_fsm(
            |item: u32| (light(), Bulb { item, actions: 0 }),
            next,
            |state: &Light, bulb: Bulb, out: &mut Emitter<u32>| {
                if *state == Light::On {
                    out.push(bulb.item * 10 + bulb.actions);
                }
            },
        )
    }

    fn drain(out: &mut Emitter<u32>) -> Vec<u32> {
        out.take_all()
    }

    #[tokio::test]
    async fn each_item_runs_its_own_machine_until_settled() {
        let mut t = flipper(|_, b| (b.actions < b.item).then_some(Flip::Flip));
        let mut out = Emitter::new(8);
        for item in 0..4 {
            t.process(item, &mut out).await.unwrap();
        }
        // Odd counts of flips leave the light on; each flip ran one action.
        assert_eq!(drain(&mut out), [11, 33]);
    }

    #[tokio::test]
    async fn a_machine_error_fails_the_item() {
        let mut t = flipper(|_, _| Some(Flip::Jam));
        let mut out = Emitter::new(8);
        let error = t.process(1, &mut out).await.unwrap_err();
        assert!(error.to_string().contains("Jam"), "{error}");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_machine_that_never_settles_fails_the_item() {
        let mut t = flipper(|_, _| Some(Flip::Flip));
        let mut out = Emitter::new(8);
        let error = t.process(1, &mut out).await.unwrap_err();
        let error = error.downcast::<ItemNotSettled>().unwrap();
        assert_eq!(*error, ItemNotSettled { state: "Off" });
    }
}
