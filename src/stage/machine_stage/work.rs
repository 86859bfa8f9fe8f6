//! A machine stage as the stage supervisor drives it: [`AsMachine`], a
//! [`Work`] over the user's machine.

use std::marker::PhantomData;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::journal::{self, Saved};
use super::{MachineContext, MachineStage, StageInput};
use crate::fsm::{EventVariant, FsmAction, FsmError, StateMachine, StateVariant};
use crate::stage::StageKind;
use crate::stage::barrier::pass_barrier;
use crate::stage::context::StageContext;
use crate::stage::logic::{Attempted, Emitter};
use crate::stage::ports::{Input, Ports};
use crate::stage::retry::Retries;
use crate::stage::work::{Attempt, Stepped, Work, work_off_received};
use crate::supervise::BoxError;

/// Runs a [`MachineStage`] as a transform (or, with `SINK`, a sink).
pub(crate) struct AsMachine<T, S, E, C, A, Ev, const SINK: bool> {
    spec: MachineStage<T, S, E, C, A, Ev>,
    machine: StateMachine<S, E, MachineContext<T, C>, A>,
    ctx: MachineContext<T, C>,
    /// Whether the machine was entered or resumed (done at the first work
    /// or event, since reading the journal is async).
    loaded: bool,
    /// Whether the end of input was handed to the machine.
    ended: bool,
    /// The number of the state last journaled (or read back).
    seq: u64,
    /// The state variant and deadline last journaled (or read back): a
    /// change of either is journaled.
    journaled: Option<(&'static str, Option<Instant>)>,
    /// A checkpoint's snapshot the stage starts from, once loaded.
    restored: Option<Saved<S, C>>,
    _kind: PhantomData<fn() -> Ev>,
}

impl<T, S, E, C, A, Ev, const SINK: bool> AsMachine<T, S, E, C, A, Ev, SINK> {
    /// The stage's logic for one start, for the run `stage` describes.
    pub(crate) fn new(spec: MachineStage<T, S, E, C, A, Ev>, stage: &StageContext) -> Self {
        let machine = (spec.machine)();
        let ctx = MachineContext::new((spec.context)(stage), stage.clone());
        AsMachine {
            spec,
            machine,
            ctx,
            loaded: false,
            ended: false,
            seq: 0,
            journaled: None,
            restored: None,
            _kind: PhantomData,
        }
    }
}

impl<T, S, E, C, A, Ev, const SINK: bool> AsMachine<T, S, E, C, A, Ev, SINK>
where
    T: Send + 'static,
    S: StateVariant + Send + Sync + 'static,
    E: EventVariant + Send + Sync + 'static,
    C: Send + 'static,
    A: FsmAction<Context = MachineContext<T, C>> + Send + Sync + 'static,
{
    /// Whether the machine is done: in a terminal state, or told to
    /// complete by an action.
    fn finished(&self) -> bool {
        self.ctx.completing || self.machine.is_terminal()
    }

    /// Resumes the machine in its journaled state, or enters its initial
    /// state (running its entry actions); once per start.
    async fn load(&mut self) -> Result<(), BoxError> {
        if self.loaded {
            return Ok(());
        }
        let saved = match &self.spec.codec {
            Some(codec) => journal::load(self.ctx.stage(), codec).await?,
            None => None,
        };
        self.loaded = true;
        if let Some((seq, _)) = &saved {
            self.seq = *seq;
        }
        // A checkpoint's snapshot wins: the run replays its sources from
        // that cut. It is journaled anew (as the latest) at the next write.
        if let Some(restored) = self.restored.take() {
            self.resume(restored);
            return Ok(());
        }
        match saved {
            Some((_, saved)) => {
                self.resume(saved);
                self.journaled = Some(self.mark());
            }
            None => {
                let entered = self.machine.enter(&mut self.ctx);
                self.machine.execute_actions(entered, &mut self.ctx).await?;
            }
        }
        Ok(())
    }

    fn resume(&mut self, saved: Saved<S, C>) {
        tracing::debug!(stage = %self.ctx.stage().stage(), state = saved.state.variant_name(),
            "machine stage resumes in its journaled state");
        self.machine.resume(saved.state, saved.deadline);
        *self.ctx.user_mut() = saved.context;
    }

    fn mark(&self) -> (&'static str, Option<Instant>) {
        (self.machine.state().variant_name(), self.machine.deadline())
    }

    /// Hands `event` to the machine and runs the actions it returns.
    async fn feed(&mut self, event: E) -> Result<(), FsmError> {
        let actions = self.machine.handle(event, &mut self.ctx).await?;
        self.machine.execute_actions(actions, &mut self.ctx).await
    }

    /// Maps `input` and, unless it is ignored or the machine is done,
    /// hands it to the machine.
    async fn feed_input(&mut self, input: StageInput<T, Ev>) -> Result<(), FsmError> {
        if self.finished() {
            return Ok(());
        }
        match (self.spec.map)(input) {
            Some(event) => self.feed(event).await,
            None => Ok(()),
        }
    }

    /// Fires the current state's timeout.
    async fn fire_timeout(&mut self) -> Result<(), FsmError> {
        let actions = self.machine.handle_timeout(&mut self.ctx).await?;
        self.machine.execute_actions(actions, &mut self.ctx).await
    }

    /// Journals the state if its variant or deadline changed since the
    /// last write (a durable machine only): at most once per unit of work.
    async fn persist(&mut self) -> Result<(), BoxError> {
        let Some(codec) = &self.spec.codec else {
            return Ok(());
        };
        let mark = self.mark();
        if self.journaled == Some(mark) {
            return Ok(());
        }
        let (state, deadline) = (self.machine.state(), self.machine.deadline());
        let value = journal::to_json(self.ctx.stage(), codec, state, self.ctx.user(), deadline)?;
        journal::save(self.ctx.stage(), self.seq + 1, mark.0, value).await?;
        self.seq += 1;
        self.journaled = Some(mark);
        Ok(())
    }

    /// Whether the stage's work is over: the machine is done, or its input
    /// ended and it declares no terminal state to wait for.
    fn over(&self) -> bool {
        self.finished() || (self.ended && self.machine.table().terminals.is_empty())
    }

    /// Ends a unit of work: journals the state if it changed, then sends
    /// what the machine emitted downstream; `Some(Ended)` once the work is
    /// [`over`](Self::over).
    async fn settle(&mut self, ports: &mut Ports<T>) -> Result<Option<Stepped>, BoxError>
    where
        T: Clone,
    {
        ports.outbox.extend(self.ctx.out.drain(..));
        self.persist().await?;
        ports.send_outbox().await?;
        Ok(self.over().then_some(Stepped::Ended))
    }
}

impl<T, S, E, C, A, Ev, const SINK: bool> Attempt<T> for AsMachine<T, S, E, C, A, Ev, SINK>
where
    T: Send + 'static,
    S: StateVariant + Send + Sync + 'static,
    E: EventVariant + Send + Sync + 'static,
    C: Send + 'static,
    A: FsmAction<Context = MachineContext<T, C>> + Send + Sync + 'static,
    Ev: Send + 'static,
{
    fn attempt_now(&mut self, item: T, _: &mut Emitter<T>) -> Attempted<T> {
        // The item becomes an event: a synchronous handler still runs
        // without a future (`handle` makes none for it).
        Attempted::Later(item)
    }

    async fn attempt(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), BoxError> {
        let fed = self.feed_input(StageInput::Item(item)).await;
        // What a failed attempt emitted is dropped with it by the retry.
        out.extend(self.ctx.out.drain(..));
        Ok(fed?)
    }
}

impl<T, S, E, C, A, Ev, const SINK: bool> Work<T> for AsMachine<T, S, E, C, A, Ev, SINK>
where
    T: Clone + Send + 'static,
    S: StateVariant + Send + Sync + 'static,
    E: EventVariant + Send + Sync + 'static,
    C: Send + 'static,
    A: FsmAction<Context = MachineContext<T, C>> + Send + Sync + 'static,
    Ev: Send + 'static,
{
    const KIND: StageKind = if SINK {
        StageKind::Sink
    } else {
        StageKind::Transform
    };

    type Event = Ev;

    async fn step(
        &mut self,
        ports: &mut Ports<T>,
        retries: &Retries<'_>,
    ) -> Result<Stepped, BoxError> {
        self.load().await?;
        // What an event or the entry emitted, and a state it changed.
        if let Some(done) = self.settle(ports).await? {
            return Ok(done);
        }
        let doorbell = &retries.bells.control;
        let deadline = async {
            match self.machine.deadline() {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        // A due deadline fires before more input: it came first. Once the
        // input ended, only the timer and events (the doorbell rings with
        // each) can move the machine to a terminal state.
        let input = tokio::select! {
            biased;
            () = deadline => None,
            () = doorbell.notified(), if self.ended => Some(Input::Interrupted),
            input = ports.next_input(doorbell), if !self.ended => Some(input),
        };
        match input {
            None => self.fire_timeout().await?,
            Some(Input::Ready) => {
                let cut = work_off_received(self, ports, retries).await?;
                let done = self.settle(ports).await?;
                return Ok(cut.or(done).unwrap_or(Stepped::Worked));
            }
            Some(Input::Ended) => {
                self.ended = true;
                tracing::debug!(stage = %self.ctx.stage().stage(), "machine stage: input ended");
                self.feed_input(StageInput::End).await?;
            }
            Some(Input::Interrupted) => return Ok(Stepped::Interrupted),
            Some(Input::Barrier(id)) => pass_barrier(self, ports, id).await?,
        }
        Ok(self.settle(ports).await?.unwrap_or(Stepped::Worked))
    }

    async fn complete(&mut self, ports: &mut Ports<T>) -> Result<Option<Value>, BoxError> {
        self.load().await?;
        self.settle(ports).await?;
        let output = match &self.spec.output {
            Some(output) => output(self.machine.state(), self.ctx.user()),
            None => Value::Null,
        };
        Ok(Some(json!({
            "state": self.machine.state().variant_name(),
            "output": output,
        })))
    }

    fn signal(&mut self, _: &str, _: &Value) {}

    async fn on_event(&mut self, event: Ev) -> Result<(), BoxError> {
        self.load().await?;
        // What it emits goes with the next unit of work.
        Ok(self.feed_input(StageInput::Event(event)).await?)
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        let Some(codec) = &self.spec.codec else {
            return Ok(None);
        };
        let (state, deadline) = (self.machine.state(), self.machine.deadline());
        let value = journal::to_json(self.ctx.stage(), codec, state, self.ctx.user(), deadline)?;
        Ok(Some(value))
    }

    /// A checkpoint's snapshot wins over the journaled state (taken at the
    /// first work, which reads the journal for the numbering).
    fn restore(&mut self, snapshot: Value) -> Result<(), BoxError> {
        let Some(codec) = &self.spec.codec else {
            return Ok(());
        };
        let saved = journal::from_json(self.ctx.stage(), codec, "checkpoint", snapshot)?;
        self.restored = Some(saved);
        Ok(())
    }

    fn ends_before_input(&self) -> bool {
        !self.ended
    }
}
