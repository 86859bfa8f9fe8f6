//! Shared scaffolding of the supervision tests: one state machine and one
//! scripted component supervised over it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};
use troupe::ids::{StageId, WriterId};
use troupe::supervise::{
    BoxError, ChannelBuilder, DispatchResult, EventLoopDirective, ExternalEventMode,
    ExternalEventPolicy, ExternalEventSender, StateWatcher, Supervised, Supervisor,
    WithExternalEvents,
};

#[derive(Debug, Clone, PartialEq, StateVariant)]
pub enum St {
    /// Its entry hook panics; only ever an initial state.
    Booting,
    Created,
    Running,
    Paused,
    Waiting,
    Failed(String),
    Done,
}

#[derive(Debug, Clone, PartialEq, EventVariant)]
pub enum Ev {
    Start,
    Finish,
    Pause,
    Wait,
    /// Self-transition in `Running` whose middle action fails.
    BadActions,
    /// Self-transition in `Running` whose action panics.
    PanickyAction,
    /// Self-transition in `Running` whose first action answers `execute_now`.
    Quick,
    /// Self-transition in `Running` whose first action panics in `execute_now`.
    PanickyNow,
    /// Its handler panics, in any state.
    Explode,
    /// Handled nowhere.
    Bogus,
    Fail(String),
    ChannelClosed,
    Cancel,
}

#[derive(Debug, Default)]
pub struct Ctx {
    /// What the actions did, in order.
    pub log: Vec<String>,
}
impl FsmContext for Ctx {}

#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    Record(String),
    Boom(&'static str),
    Panic,
    /// Recorded by `execute_now`; its `execute` must never run.
    Now(&'static str),
    /// Panics in `execute_now`.
    PanicNow,
}

#[async_trait]
impl FsmAction for Act {
    type Context = Ctx;
    async fn execute(&self, ctx: &mut Ctx) -> Result<(), FsmError> {
        match self {
            Act::Record(what) => {
                ctx.log.push(what.clone());
                Ok(())
            }
            Act::Boom(why) => Err(FsmError::action(why)),
            Act::Panic => panic!("action exploded"),
            Act::Now(what) => Err(FsmError::action(format!(
                "`execute` ran for {what}, which `execute_now` answers"
            ))),
            Act::PanicNow => Err(FsmError::action("`execute` ran for PanicNow")),
        }
    }

    fn execute_now(&self, ctx: &mut Ctx) -> Option<Result<(), FsmError>> {
        match self {
            Act::Now(what) => {
                ctx.log.push(format!("now: {what}"));
                Some(Ok(()))
            }
            Act::PanicNow => panic!("execute_now exploded"),
            _ => None,
        }
    }
}

fn record(what: &str) -> Act {
    Act::Record(what.to_owned())
}

/// The machine every test component runs.
pub fn machine(initial: St) -> StateMachine<St, Ev, Ctx, Act> {
    fsm! {
        state: St; event: Ev; context: Ctx; action: Act; initial: initial;

        state St::Booting {
            on_entry => |_, _| panic!("entry exploded");
        }
        state St::Created {
            on Ev::Start => |_, _, _| Box::pin(async { Ok(Transition::to(St::Running).with_action(record("started"))) });
        }
        state St::Running {
            on Ev::Finish => |_, _, _| Box::pin(async { Ok(Transition::to(St::Done).with_action(record("finished"))) });
            on Ev::Pause => |_, _, _| Box::pin(async { Ok(Transition::to(St::Paused)) });
            on Ev::Wait => |_, _, _| Box::pin(async { Ok(Transition::to(St::Waiting)) });
            on Ev::BadActions => |_, _, _| Box::pin(async {
                Ok(Transition::to(St::Running).with_actions([record("a"), Act::Boom("bad"), record("c")]))
            });
            on Ev::PanickyAction => |_, _, _| Box::pin(async {
                Ok(Transition::to(St::Running).with_actions([Act::Panic, record("after panic")]))
            });
            on Ev::Quick => |_, _, _| Box::pin(async {
                Ok(Transition::to(St::Running).with_actions([Act::Now("quick"), record("then slow")]))
            });
            on Ev::PanickyNow => |_, _, _| Box::pin(async {
                Ok(Transition::to(St::Running).with_actions([Act::PanicNow, record("after panic")]))
            });
        }
        state St::Paused {
            on Ev::Start => |_, _, _| Box::pin(async { Ok(Transition::to(St::Running)) });
        }
        state St::Waiting {
            timeout Duration::from_secs(5) => |_, _| Box::pin(async {
                Ok(Transition::to(St::Failed("timed out".into())).with_action(record("timeout")))
            });
        }
        state _ {
            on Ev::Fail => |_, e, _| {
                let Ev::Fail(why) = e else { unreachable!() };
                let why = why.clone();
                Box::pin(async move {
                    Ok(Transition::to(St::Failed(why.clone())).with_action(Act::Record(format!("failure: {why}"))))
                })
            };
            on Ev::ChannelClosed => |_, _, _| Box::pin(async {
                Ok(Transition::to(St::Failed("control channel closed".into())).with_action(record("closed")))
            });
            on Ev::Cancel => |_, _, _| Box::pin(async { Ok(Transition::to(St::Done).with_action(record("cancelled"))) });
            on Ev::Explode => |_, _, _| panic!("handler exploded");
        }
    }
}

/// One scripted dispatch outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Continue,
    Go(Ev),
    Err(String),
    Panic(String),
    Terminate,
    /// Never returns (a dispatch waiting for work that does not come).
    Hang,
}

/// What the tests observe of a component, shared with the test body.
#[derive(Debug, Default)]
pub struct Observed {
    /// The state of each inner `dispatch_state` call, in order.
    pub dispatched: Vec<St>,
    /// Messages passed to `event_for_action_error`, in order.
    pub failures: Vec<String>,
    /// `write_completion_event` calls.
    pub completions: usize,
    /// `ticks` at each dispatch (see `Script::ticks`).
    pub ticks_seen: Vec<usize>,
}

/// A component that plays a list of dispatch outcomes in order, whatever the state.
#[derive(Clone)]
pub struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
    /// What dispatch does once the steps run out.
    pub when_done: Step,
    pub observed: Arc<Mutex<Observed>>,
    /// Whether `write_completion_event` fails.
    pub completion_fails: bool,
    /// Maps a failure message to the failure event.
    pub failure_event: fn(String) -> Ev,
    /// Read at each dispatch; a test task may advance it.
    pub ticks: Arc<std::sync::atomic::AtomicUsize>,
    /// What `stage_id` returns: a stage's supervisor by default, as the
    /// runtime's are.
    pub stage: Option<StageId>,
}

pub const STAGE: StageId = StageId::new_const(7);

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Script {
            steps: Arc::new(Mutex::new(steps.into_iter().collect())),
            when_done: Step::Hang,
            observed: Arc::default(),
            completion_fails: false,
            failure_event: Ev::Fail,
            ticks: Arc::default(),
            stage: Some(STAGE),
        }
    }

    pub fn observed(&self) -> MutexGuard<'_, Observed> {
        self.observed.lock().unwrap()
    }

    async fn dispatch(&self, state: &St) -> DispatchResult<Ev> {
        let step = {
            let mut observed = self.observed();
            observed.dispatched.push(state.clone());
            let tick = self.ticks.load(std::sync::atomic::Ordering::SeqCst);
            observed.ticks_seen.push(tick);
            let next = self.steps.lock().unwrap().pop_front();
            next.unwrap_or_else(|| self.when_done.clone())
        };
        match step {
            Step::Continue => Ok(EventLoopDirective::Continue),
            Step::Go(event) => Ok(EventLoopDirective::Transition(event)),
            Step::Err(message) => Err(message.into()),
            Step::Panic(message) => panic!("{message}"),
            Step::Terminate => Ok(EventLoopDirective::Terminate),
            Step::Hang => std::future::pending().await,
        }
    }

    async fn write_completion(&self) -> Result<(), BoxError> {
        self.observed().completions += 1;
        if self.completion_fails {
            return Err("journal unavailable".into());
        }
        Ok(())
    }

    fn failure(&self, msg: String) -> Ev {
        self.observed().failures.push(msg.clone());
        (self.failure_event)(msg)
    }
}

/// The scripted component as a supervisor.
pub struct Sup(pub Script);

impl Supervisor for Sup {
    type State = St;
    type Event = Ev;
    type Context = Ctx;
    type Action = Act;
    fn build_state_machine(&self, initial_state: St) -> StateMachine<St, Ev, Ctx, Act> {
        machine(initial_state)
    }
    fn name(&self) -> &str {
        "Sup"
    }
}

#[async_trait]
impl Supervised for Sup {
    async fn dispatch_state(&mut self, state: &St, _context: &mut Ctx) -> DispatchResult<Ev> {
        self.0.dispatch(state).await
    }
    fn writer_id(&self) -> WriterId {
        WriterId::from(STAGE)
    }
    async fn write_completion_event(&self) -> Result<(), BoxError> {
        self.0.write_completion().await
    }
    fn event_for_action_error(&self, msg: String) -> Ev {
        self.0.failure(msg)
    }
    fn stage_id(&self) -> Option<StageId> {
        self.0.stage
    }
}

/// `Created` and `Paused` block, `Running` polls, the rest ignore; a closed
/// channel fails `Created` and `Running`, and `Paused` stops listening.
impl ExternalEventPolicy for Sup {
    fn external_event_mode(state: &St) -> ExternalEventMode {
        match state {
            St::Created | St::Paused => ExternalEventMode::Block,
            St::Running => ExternalEventMode::Poll,
            St::Booting | St::Waiting | St::Failed(_) | St::Done => ExternalEventMode::Ignore,
        }
    }
    fn on_external_event_channel_closed(state: &St) -> Option<Ev> {
        match state {
            St::Created | St::Running => Some(Ev::ChannelClosed),
            _ => None,
        }
    }
}

/// A wrapped scripted component and the sender and watcher of its channel.
pub fn with_channel(
    script: Script,
    initial: St,
) -> (
    WithExternalEvents<Sup>,
    ExternalEventSender<Ev>,
    StateWatcher<St>,
) {
    let (tx, rx, watcher) = ChannelBuilder::new().capacity(4).build(initial);
    (
        WithExternalEvents::new(Sup(script), rx, watcher.clone()),
        tx,
        watcher,
    )
}

/// The directive of a dispatch result, or the error's message.
pub fn directive(result: DispatchResult<Ev>) -> Result<EventLoopDirective<Ev>, String> {
    result.map_err(|e| e.to_string())
}
