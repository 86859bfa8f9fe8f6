//! Machine stages: a flow stage whose logic is the user's own `fsm!`
//! machine (the user-facing docs, with an example, are on [`MachineStage`]).
//!
//! Built over the stage machinery every transform and sink uses (pipes,
//! retries, dead letters, restarts, user events, checkpoints): `work.rs`
//! drives the machine as a stage's [`Work`](super::work::Work), `journal.rs`
//! keeps its state in the journal.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::context::StageContext;
use super::events::NoEvents;
use crate::fsm::{FsmContext, StateMachine};

mod journal;
mod work;

pub use journal::MachineStageError;
pub(crate) use work::AsMachine;

/// What reaches a machine stage, before its mapping turns it into one of
/// the machine's events (see [`MachineStage::new`]).
#[derive(Debug, Clone, PartialEq)]
pub enum StageInput<T, Ev = NoEvents> {
    /// An item from upstream.
    Item(T),
    /// One of the stage's typed user events
    /// ([`FlowBuilder::with_events`](crate::flow::FlowBuilder::with_events)).
    Event(Ev),
    /// The stage's input ended: every upstream finished.
    End,
}

/// The context a machine stage's `fsm!` machine runs with: the user's own
/// context `C` (reached through `Deref`), where its actions emit items
/// downstream ([`emit`](Self::emit)) and complete the stage
/// ([`complete`](Self::complete)), and the stage's [`StageContext`] (run
/// id, input, memoized [`run`](StageContext::run)). Declare the machine
/// with `context: MachineContext<T, C>;`.
pub struct MachineContext<T, C> {
    user: C,
    pub(super) out: Vec<T>,
    pub(super) completing: bool,
    stage: StageContext,
}

impl<T, C> MachineContext<T, C> {
    pub(crate) fn new(user: C, stage: StageContext) -> Self {
        MachineContext {
            user,
            out: Vec::new(),
            completing: false,
            stage,
        }
    }

    /// Sends `item` downstream (after the item, event or timeout being
    /// handled; an item whose handling fails and is retried has what it
    /// emitted dropped).
    pub fn emit(&mut self, item: T) {
        self.out.push(item);
    }

    /// Completes the stage once the current item, event or timeout is
    /// handled, as reaching a terminal state does.
    pub fn complete(&mut self) {
        self.completing = true;
    }

    /// The stage and run the machine works for.
    pub fn stage(&self) -> &StageContext {
        &self.stage
    }

    /// The user's context.
    pub fn user(&self) -> &C {
        &self.user
    }

    /// The user's context, mutably.
    pub fn user_mut(&mut self) -> &mut C {
        &mut self.user
    }
}

impl<T, C> Deref for MachineContext<T, C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.user
    }
}

impl<T, C> DerefMut for MachineContext<T, C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.user
    }
}

impl<T, C> FsmContext for MachineContext<T, C> {}

impl<T, C: std::fmt::Debug> std::fmt::Debug for MachineContext<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineContext")
            .field("user", &self.user)
            .field("emitted", &self.out.len())
            .field("completing", &self.completing)
            .finish_non_exhaustive()
    }
}

/// Builds a machine: called once when the flow is built (its table goes
/// into the definition's fingerprint) and at every start of the stage.
type BuildMachine<T, S, E, C, A> =
    Arc<dyn Fn() -> StateMachine<S, E, MachineContext<T, C>, A> + Send + Sync>;
/// Maps what reaches the stage to one of the machine's events.
type MapInput<T, Ev, E> = Arc<dyn Fn(StageInput<T, Ev>) -> Option<E> + Send + Sync>;
/// The value recorded with the stage's completion.
type Output<S, C> = Arc<dyn Fn(&S, &C) -> Value + Send + Sync>;

/// A state and context as JSON, or why they are not.
type Encoded = Result<(Value, Value), serde_json::Error>;

/// How a durable machine's state and context become JSON and back.
pub(crate) struct Codec<S, C> {
    pub(crate) encode: fn(&S, &C) -> Encoded,
    pub(crate) decode: fn(Value, Value) -> Result<(S, C), serde_json::Error>,
}

impl<S, C> Clone for Codec<S, C> {
    fn clone(&self) -> Self {
        Codec { ..*self }
    }
}

fn encode<S: Serialize, C: Serialize>(s: &S, c: &C) -> Encoded {
    Ok((serde_json::to_value(s)?, serde_json::to_value(c)?))
}

fn decode<S: DeserializeOwned, C: DeserializeOwned>(
    s: Value,
    c: Value,
) -> Result<(S, C), serde_json::Error> {
    Ok((S::deserialize(s)?, C::deserialize(c)?))
}

/// A flow stage that is the user's own `fsm!` machine; add it with
/// [`FlowBuilder::machine_stage`](crate::flow::FlowBuilder::machine_stage)
/// (or, taking user events `Ev`, through
/// [`with_events`](crate::flow::FlowBuilder::with_events)).
///
/// What reaches the stage becomes the machine's events through the mapping
/// given to [`new`](Self::new): each item ([`StageInput::Item`]), each user
/// event ([`StageInput::Event`]) and the end of its input
/// ([`StageInput::End`]); `None` ignores it. The machine's own `timeout`
/// clauses fire while the stage waits for input. Actions emit items
/// downstream ([`MachineContext::emit`]); the stage completes when the
/// machine reaches a terminal state (`terminal:` in the `fsm!` header) or
/// an action calls [`MachineContext::complete`]. After the end of its input
/// a machine that declares terminal states goes on taking its timeouts and
/// user events until it reaches one (a workflow waiting for an approval);
/// one that declares none completes then. Its completion records `{"state": <variant>,
/// "output": <output>}` under `result` ([`output`](Self::output), default
/// `null`); items that reach a completed machine are dropped, and so is the
/// rest of its input.
///
/// Failures are those of any stage: an error while handling an item (an
/// unhandled event, a failing handler or action) is an item failure,
/// retried per the stage's [`RetryPolicy`](crate::stage::RetryPolicy) and
/// then dead-lettered; one while handling a user event, the end of input
/// or a timeout fails the stage, which restarts per its restart policy. A
/// handler's move stands when an action after it fails: the retry hands
/// the item to the state it reached.
///
/// **State across restarts and crashes**: a [`durable`](Self::durable)
/// machine's state, context and timer deadline are journaled whenever its
/// state's variant changes (at most one write per batch of items), and
/// every start of the stage, in this process or after a crash, resumes it
/// there, its timer re-armed for the journaled deadline (one that passed
/// meanwhile fires at once). A machine that is not durable (its state or
/// context is not serializable) starts from its initial state, with a fresh
/// context, at every start of the stage.
///
/// What that means in practice:
/// * what the context gains while the variant stays (a count per item) is
///   journaled with the next change of variant only, so a crash rolls it
///   back to the last change; fields it skips (`#[serde(skip)]`) resume as
///   their defaults;
/// * a run resumed from a checkpoint starts the machine from the
///   checkpoint's snapshot of it, not from the later journaled state, so
///   that the replayed items are not counted twice;
/// * each journaled state is a memo of the stage (`@machine/<n>`): a
///   machine that changes variant on every batch journals once per batch,
///   and its memos grow with the run;
/// * its journal write comes before what the batch emitted is sent on, so
///   downstream never sees items of a state a crash could forget.
///
/// A drained machine stage (a `Drain` control event) finishes its input
/// and then, like any machine stage, waits for a terminal state; a paused
/// one fires a timeout that came due meanwhile once it is resumed;
/// flow-wide `Signal`s do not reach the machine (send it user events).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use troupe::prelude::*;
///
/// #[derive(Debug, Clone, PartialEq, StateVariant, Serialize, Deserialize)]
/// enum Batch { Filling, Closed }
/// #[derive(Debug, EventVariant)]
/// enum Ev { Add(u64), End }
/// #[derive(Default, Serialize, Deserialize)]
/// struct Sum { total: u64 }
///
/// type Ctx = MachineContext<u64, Sum>;
///
/// fn batcher() -> StateMachine<Batch, Ev, Ctx, NoAction<Ctx>> {
///     fsm! {
///         state: Batch; event: Ev; context: Ctx; initial: Batch::Filling;
///         terminal: Batch::Closed;
///         state Batch::Filling {
///             // Sums items; a total of 10 or more goes downstream and closes.
///             on Ev::Add => [Batch::Filling, Batch::Closed] sync |_, e, ctx| {
///                 let Ev::Add(x) = e else { unreachable!() };
///                 ctx.total += x;
///                 if ctx.total < 10 {
///                     return Transition::to(Batch::Filling);
///                 }
///                 let total = ctx.total;
///                 ctx.emit(total);
///                 Transition::to(Batch::Closed)
///             };
///             on Ev::End => [Batch::Closed] sync |_, _, _| Transition::to(Batch::Closed);
///         }
///     }
/// }
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let stage = MachineStage::new(batcher, |_ctx: &StageContext| Sum::default(), |input| match input {
///     StageInput::Item(x) => Some(Ev::Add(x)),
///     StageInput::End => Some(Ev::End),
///     StageInput::Event(never) => match never {},
/// })
/// .durable()
/// .output(|_state, sum: &Sum| serde_json::json!(sum.total));
/// let flow = FlowDefinition::<u64>::builder("batches")
///     .source("numbers", |_| source_iter(1..=100_u64))
///     .machine_stage("batch", stage)
///     .sink("print", |_| sink_fn(|total: u64| Ok(assert_eq!(total, 10))))
///     .pipeline(["numbers", "batch", "print"])
///     .build()?;
/// let runtime = Runtime::builder().memory().register(flow)?.start().await?;
/// let outcome = runtime.start("batches").await?.wait().await?;
/// assert_eq!(outcome.status, RunStatus::Finished);
/// let batch = &outcome.structured_output.unwrap()["steps"]["batch"];
/// assert_eq!(batch["result"], serde_json::json!({"state": "Closed", "output": 10}));
/// assert_eq!(batch["items_out"], 1);
/// runtime.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct MachineStage<T, S, E, C, A, Ev = NoEvents> {
    pub(crate) machine: BuildMachine<T, S, E, C, A>,
    pub(crate) context: Arc<dyn Fn(&StageContext) -> C + Send + Sync>,
    pub(crate) map: MapInput<T, Ev, E>,
    pub(crate) output: Option<Output<S, C>>,
    pub(crate) codec: Option<Codec<S, C>>,
    pub(crate) sink: bool,
}

impl<T, S, E, C, A, Ev> Clone for MachineStage<T, S, E, C, A, Ev> {
    fn clone(&self) -> Self {
        MachineStage {
            machine: self.machine.clone(),
            context: self.context.clone(),
            map: self.map.clone(),
            output: self.output.clone(),
            codec: self.codec.clone(),
            sink: self.sink,
        }
    }
}

impl<T, S, E, C, A, Ev> MachineStage<T, S, E, C, A, Ev> {
    /// A machine stage: `machine` builds the machine (an `fsm!`
    /// constructor), `context` its user context at each start of the stage,
    /// for the run its [`StageContext`] describes, and `map` turns what
    /// reaches the stage into the machine's events (`None`: ignored).
    pub fn new(
        machine: impl Fn() -> StateMachine<S, E, MachineContext<T, C>, A> + Send + Sync + 'static,
        context: impl Fn(&StageContext) -> C + Send + Sync + 'static,
        map: impl Fn(StageInput<T, Ev>) -> Option<E> + Send + Sync + 'static,
    ) -> Self {
        MachineStage {
            machine: Arc::new(machine),
            context: Arc::new(context),
            map: Arc::new(map),
            output: None,
            codec: None,
            sink: false,
        }
    }

    /// The value recorded (as `output`) with the stage's completion, from
    /// the state and context it completed in.
    pub fn output(mut self, output: impl Fn(&S, &C) -> Value + Send + Sync + 'static) -> Self {
        self.output = Some(Arc::new(output));
        self
    }

    /// Journals the machine's state and context whenever its state's
    /// variant changes, so that every start of the stage (after a restart
    /// or a crash) resumes it there; see [`MachineStage`].
    pub fn durable(mut self) -> Self
    where
        S: Serialize + DeserializeOwned,
        C: Serialize + DeserializeOwned,
    {
        self.codec = Some(Codec {
            encode: encode::<S, C>,
            decode: decode::<S, C>,
        });
        self
    }

    /// Makes the stage a sink (no outputs; what it emits is dropped)
    /// rather than a transform.
    pub fn as_sink(mut self) -> Self {
        self.sink = true;
        self
    }

    /// Whether the stage runs as a sink.
    pub fn is_sink(&self) -> bool {
        self.sink
    }

    /// Whether its state is journaled ([`durable`](Self::durable)).
    pub fn is_durable(&self) -> bool {
        self.codec.is_some()
    }
}

impl<T, S, E, C, A, Ev> std::fmt::Debug for MachineStage<T, S, E, C, A, Ev> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineStage")
            .field("durable", &self.codec.is_some())
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::context::tests::ctx;
    use serde_json::json;

    #[tokio::test]
    async fn a_machine_context_emits_completes_and_reaches_the_user_context() {
        let stage = ctx(Value::Null).await;
        let mut machine_ctx = MachineContext::<u64, Vec<&str>>::new(Vec::new(), stage);
        machine_ctx.push("deref");
        machine_ctx.emit(1);
        machine_ctx.emit(2);
        assert_eq!(machine_ctx.out, [1, 2]);
        assert!(!machine_ctx.completing);
        machine_ctx.complete();
        assert!(machine_ctx.completing);
        assert_eq!(machine_ctx.user(), &["deref"]);
        assert_eq!(machine_ctx.stage().stage(), "charge");
        let debug = format!("{machine_ctx:?}");
        assert!(debug.contains("emitted: 2"), "{debug}");
    }

    #[test]
    fn a_codec_round_trips_state_and_context() {
        let (state, context) = encode(&"Open", &7_u32).unwrap();
        assert_eq!((state.clone(), context.clone()), (json!("Open"), json!(7)));
        let decoded: (String, u32) = decode(state, context).unwrap();
        assert_eq!(decoded, ("Open".to_owned(), 7));
        assert!(decode::<String, u32>(json!(1), json!("x")).is_err());
    }
}
