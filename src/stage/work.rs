//! One view of the three kinds of stage logic, as the stage supervisor drives it.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use super::StageKind;
use super::barrier::{commit_settled, pass_barrier, settle_last_pre_commit};
use super::events::{NoEvents, OnEvent};
use super::logic::{Attempted, Emitter, Produced, Sink, Source, Step, StepInputs, Transform};
use super::ports::{Input, Ports, Stopped};
use super::retry::Retries;
use crate::supervise::BoxError;

/// What one unit of work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stepped {
    /// Items were handled; there may be more.
    Worked,
    /// The input (or the source) is exhausted.
    Ended,
    /// A control event interrupted the work: the doorbell rang while
    /// waiting for input, or a cancel or drain cut a pending `produce` short.
    Interrupted,
}

/// How control events reach a stage that is busy inside its work.
#[derive(Debug)]
pub(crate) struct Bells {
    /// Rung around every control or user event: ends a wait for input
    /// early. One per stage and run (a stale ring costs one extra look).
    pub(crate) control: Arc<Notify>,
    /// Rung once a `Cancel` or `Drain` is queued: ends a pending
    /// [`Source::produce`] (its future is dropped). One per start, so that
    /// a ring never reaches a later start.
    pub(crate) halt: Notify,
    /// Rung once a `Cancel` is queued: ends a running [`Step`]'s work (its
    /// future is dropped — a step waiting durably for a timer, a signal or
    /// a child would otherwise hold the cancel until its grace runs out).
    /// A drain lets a step finish.
    pub(crate) cancel: Notify,
}

/// The logic of one stage, whatever its kind. Implemented by the wrappers
/// below; monomorphized per user type, so the per-item path has no dynamic
/// dispatch and no allocation.
pub(crate) trait Work<T: Clone + Send + 'static>: Send + 'static {
    /// The kind of stage this logic runs as.
    const KIND: StageKind;

    /// The user events the logic takes ([`NoEvents`] if none).
    type Event: Send + 'static;

    /// One unit of work: a produced batch (sources) or one received batch,
    /// each item retried per `retries`.
    fn step(
        &mut self,
        ports: &mut Ports<T>,
        retries: &Retries<'_>,
    ) -> impl Future<Output = Result<Stepped, BoxError>> + Send;

    /// The user's completion hook; emitted items are sent before it returns.
    fn complete(
        &mut self,
        ports: &mut Ports<T>,
    ) -> impl Future<Output = Result<Option<Value>, BoxError>> + Send;

    /// Hands a `Signal` control event to the user logic.
    fn signal(&mut self, name: &str, payload: &Value);

    /// Hands a user event to the user logic.
    fn on_event(&mut self, event: Self::Event)
    -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Receives the outputs of the stage's upstream steps before it starts.
    fn prepare(&mut self, _inputs: StepInputs) {}

    /// The logic's snapshot for a checkpoint: a source's position, a
    /// transform's or sink's state; `None` if it keeps none.
    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(None)
    }

    /// Hands the logic the snapshot a resumed run starts from.
    fn restore(&mut self, _snapshot: Value) -> Result<(), BoxError> {
        Ok(())
    }

    /// A sink's first phase of a two-phase commit at checkpoint `id`.
    fn pre_commit(&mut self, _id: u64) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// A sink's second phase: checkpoint `id` is durable.
    fn commit(&mut self, _id: u64) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Whether the logic completed before its input ended (a machine
    /// stage in a terminal state): the rest of its input is then dropped.
    fn ends_before_input(&self) -> bool {
        false
    }
}

/// Reports a step's [`ContinueAsNew`](super::ContinueAsNew) to its flow,
/// which ends the run (stopping this stage); waits for that, or for a
/// cancel (a flow already cancelling refuses it: cancel wins).
async fn continue_as_new(error: BoxError, retries: &Retries<'_>) -> Result<Stepped, BoxError> {
    let input = match error.downcast::<super::ContinueAsNew>() {
        Ok(continued) => continued.into_input(),
        Err(error) => return Err(error),
    };
    let report = super::StageReport::ContinueAsNew(super::continue_as_new::StageContinue {
        stage: retries.index,
        generation: retries.generation,
        input,
    });
    if !(retries.report)(report) {
        return Err(format!(
            "stage `{}`: the flow is gone; the run did not continue as new",
            retries.stage
        )
        .into());
    }
    retries.bells.cancel.notified().await;
    Ok(Stepped::Interrupted)
}

/// The recorded output of a completed stage: a step's result as it is; for
/// the others, their item counts and the value their completion hook
/// returned, if any.
pub(crate) fn completion_output<T: Send + 'static>(
    kind: StageKind,
    ports: &Ports<T>,
    result: Option<Value>,
) -> Value {
    if kind == StageKind::Step {
        return result.unwrap_or(Value::Null);
    }
    let mut output = json!({
        "items_in": ports.items_in,
        "items_out": ports.items_out,
        "retried": ports.retried,
    });
    if let (Some(result), Some(map)) = (result, output.as_object_mut()) {
        map.insert("result".to_owned(), result);
    }
    output
}

/// Waits for a batch; `None` when items are ready, else what the step
/// returns (a barrier that came in is passed first).
async fn wait_for_input<T, W>(
    work: &mut W,
    ports: &mut Ports<T>,
    doorbell: &Notify,
) -> Result<Option<Stepped>, BoxError>
where
    T: Clone + Send + 'static,
    W: Work<T>,
{
    if W::KIND == StageKind::Sink {
        commit_settled(work, ports).await?;
    }
    Ok(match ports.next_input(doorbell).await {
        Input::Ready => None,
        Input::Ended => Some(Stepped::Ended),
        Input::Interrupted => Some(Stepped::Interrupted),
        Input::Barrier(id) => {
            pass_barrier(work, ports, id).await?;
            Some(Stepped::Worked)
        }
    })
}

/// One attempt at one item: a transform's `process` or a sink's `consume`,
/// each asked first for its synchronous form.
pub(crate) trait Attempt<T>: Send {
    fn attempt_now(&mut self, item: T, out: &mut Emitter<T>) -> Attempted<T>;

    fn attempt(
        &mut self,
        item: T,
        out: &mut Emitter<T>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Works through the received batch item by item, each held in the ports until an
/// attempt at it succeeds: after a failure the item and the rest of the
/// batch are still there for the retry or the restarted stage. `Some` when
/// a cancel or drain cut a backoff wait short.
pub(crate) async fn work_off_received<T, A>(
    logic: &mut A,
    ports: &mut Ports<T>,
    retries: &Retries<'_>,
) -> Result<Option<Stepped>, BoxError>
where
    T: Clone + Send + 'static,
    A: Attempt<T>,
{
    loop {
        // No future per item while the logic answers at once.
        let result = match ports.attempt_while_now(|item, out| logic.attempt_now(item, out)) {
            Stopped::Empty => return Ok(None),
            Stopped::Failed(error) => Err(error),
            Stopped::Later(item) => {
                let attempted = logic.attempt(item, &mut ports.outbox).await;
                // Slow items: progress moves with each, not each batch.
                ports.publish_counts();
                attempted
            }
        };
        match result {
            Ok(()) => ports.settle(),
            Err(error) => {
                let failed = ports.attempt_failed(&error);
                if !retries.after_item_failure(ports, failed, error).await? {
                    return Ok(Some(Stepped::Interrupted));
                }
            }
        }
    }
}

/// Runs a [`Source`] taking user events `Ev`.
pub(crate) struct AsSource<S, Ev = NoEvents>(pub(crate) S, PhantomData<fn() -> Ev>);
/// Runs a [`Transform`] taking user events `Ev`.
pub(crate) struct AsTransform<X, Ev = NoEvents>(pub(crate) X, PhantomData<fn() -> Ev>);
/// Runs a [`Sink`] taking user events `Ev`.
pub(crate) struct AsSink<K, Ev = NoEvents>(pub(crate) K, PhantomData<fn() -> Ev>);

/// The three streaming wrappers are built the same way.
macro_rules! wrapper_new {
    ($($wrapper:ident),*) => {$(
        impl<L, Ev> $wrapper<L, Ev> {
            pub(crate) fn new(logic: L) -> Self {
                $wrapper(logic, PhantomData)
            }
        }
    )*};
}
wrapper_new!(AsSource, AsTransform, AsSink);

/// Inside their `Work` impls: signals and user events go to the logic as they are.
macro_rules! forward_to_logic {
    () => {
        fn signal(&mut self, name: &str, payload: &Value) {
            self.0.on_signal(name, payload);
        }

        type Event = Ev;

        fn on_event(&mut self, event: Ev) -> impl Future<Output = Result<(), BoxError>> + Send {
            self.0.on_event(event)
        }

        fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
            self.0.snapshot()
        }

        fn restore(&mut self, snapshot: Value) -> Result<(), BoxError> {
            self.0.restore(snapshot)
        }
    };
}
/// Runs a [`Step`] once (retried per the stage's retry policy).
pub(crate) struct AsStep<S> {
    step: S,
    inputs: StepInputs,
    result: Option<Value>,
    /// Failed attempts in this start.
    failed: u32,
}

impl<S> AsStep<S> {
    pub(crate) fn new(step: S) -> Self {
        AsStep {
            step,
            inputs: StepInputs::new(),
            result: None,
            failed: 0,
        }
    }
}

impl<T, S, Ev> Work<T> for AsSource<S, Ev>
where
    T: Clone + Send + 'static,
    S: Source<T> + OnEvent<Ev>,
    Ev: Send + 'static,
{
    const KIND: StageKind = StageKind::Source;

    async fn step(
        &mut self,
        ports: &mut Ports<T>,
        retries: &Retries<'_>,
    ) -> Result<Stepped, BoxError> {
        let bells = retries.bells;
        // A cancel or drain must not wait for a `produce` blocked on the
        // outside world, nor for a full output: the pending call is dropped
        // (what it emitted so far stays in the outbox, and sends are
        // cancel-safe). A pause waits for the step to end.
        let work = async {
            // Due checkpoints' barriers go out before the next items.
            while let Some(id) = ports.checkpoint.as_ref().and_then(|c| c.due()) {
                pass_barrier(self, ports, id).await?;
            }
            let produced = self.0.produce(&mut ports.outbox).await?;
            if let Some(link) = &ports.checkpoint {
                link.count_emitted(ports.outbox.len());
            }
            ports.send_outbox().await?;
            Ok::<_, BoxError>(produced)
        };
        let produced = tokio::select! {
            biased;
            () = bells.halt.notified() => return Ok(Stepped::Interrupted),
            produced = work => produced?,
        };
        Ok(match produced {
            Produced::More => Stepped::Worked,
            Produced::Done => Stepped::Ended,
        })
    }

    async fn complete(&mut self, ports: &mut Ports<T>) -> Result<Option<Value>, BoxError> {
        let result = self.0.complete().await?;
        // Items a drained (interrupted) `produce` emitted before it was dropped.
        ports.send_outbox().await?;
        Ok(result)
    }

    forward_to_logic!();
}

impl<T, X, Ev> Work<T> for AsTransform<X, Ev>
where
    T: Clone + Send + 'static,
    X: Transform<T> + OnEvent<Ev>,
    Ev: Send + 'static,
{
    const KIND: StageKind = StageKind::Transform;

    async fn step(
        &mut self,
        ports: &mut Ports<T>,
        retries: &Retries<'_>,
    ) -> Result<Stepped, BoxError> {
        if let Some(waited) = wait_for_input(self, ports, &retries.bells.control).await? {
            return Ok(waited);
        }
        if let Some(cut) = work_off_received(self, ports, retries).await? {
            return Ok(cut);
        }
        ports.send_outbox().await?;
        Ok(Stepped::Worked)
    }

    async fn complete(&mut self, ports: &mut Ports<T>) -> Result<Option<Value>, BoxError> {
        let result = self.0.complete(&mut ports.outbox).await?;
        ports.send_outbox().await?;
        Ok(result)
    }

    forward_to_logic!();
}

impl<T, K, Ev> Work<T> for AsSink<K, Ev>
where
    T: Clone + Send + 'static,
    K: Sink<T> + OnEvent<Ev>,
    Ev: Send + 'static,
{
    const KIND: StageKind = StageKind::Sink;

    async fn step(
        &mut self,
        ports: &mut Ports<T>,
        retries: &Retries<'_>,
    ) -> Result<Stepped, BoxError> {
        if let Some(waited) = wait_for_input(self, ports, &retries.bells.control).await? {
            return Ok(waited);
        }
        Ok(work_off_received(self, ports, retries)
            .await?
            .unwrap_or(Stepped::Worked))
    }

    async fn complete(&mut self, ports: &mut Ports<T>) -> Result<Option<Value>, BoxError> {
        settle_last_pre_commit(self, ports).await?;
        self.0.complete().await
    }

    fn pre_commit(&mut self, id: u64) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.0.pre_commit(id)
    }

    fn commit(&mut self, id: u64) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.0.commit(id)
    }

    forward_to_logic!();
}

impl<T, X, Ev> Attempt<T> for AsTransform<X, Ev>
where
    T: Send + 'static,
    X: Transform<T>,
{
    #[inline]
    fn attempt_now(&mut self, item: T, out: &mut Emitter<T>) -> Attempted<T> {
        self.0.process_now(item, out)
    }

    fn attempt(
        &mut self,
        item: T,
        out: &mut Emitter<T>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.0.process(item, out)
    }
}

impl<T, K, Ev> Attempt<T> for AsSink<K, Ev>
where
    T: Send + 'static,
    K: Sink<T>,
{
    #[inline]
    fn attempt_now(&mut self, item: T, _: &mut Emitter<T>) -> Attempted<T> {
        self.0.consume_now(item)
    }

    fn attempt(
        &mut self,
        item: T,
        _: &mut Emitter<T>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.0.consume(item)
    }
}

impl<T: Clone + Send + 'static, S: Step> Work<T> for AsStep<S> {
    const KIND: StageKind = StageKind::Step;

    async fn step(&mut self, _: &mut Ports<T>, retries: &Retries<'_>) -> Result<Stepped, BoxError> {
        // Draining steps again until `Ended`: the work runs once.
        while self.result.is_none() {
            let run = tokio::select! {
                biased;
                () = retries.bells.cancel.notified() => return Ok(Stepped::Interrupted),
                run = self.step.run(&self.inputs) => run,
            };
            match run {
                Ok(result) => self.result = Some(result),
                Err(error) if error.is::<super::ContinueAsNew>() => {
                    return continue_as_new(error, retries).await;
                }
                Err(error) => {
                    self.failed = self.failed.saturating_add(1);
                    if !retries.after_failure(self.failed, error).await? {
                        return Ok(Stepped::Interrupted);
                    }
                }
            }
        }
        Ok(Stepped::Ended)
    }

    async fn complete(&mut self, _: &mut Ports<T>) -> Result<Option<Value>, BoxError> {
        Ok(self.result.take())
    }

    fn signal(&mut self, _: &str, _: &Value) {}

    type Event = NoEvents;

    async fn on_event(&mut self, event: NoEvents) -> Result<(), BoxError> {
        match event {}
    }

    fn prepare(&mut self, inputs: StepInputs) {
        self.inputs = inputs;
    }
}
