//! Flow definitions: named stages (with their logic factories and restart
//! policies) and a validated topology, built once and started many times
//! (the user-facing docs are on [`FlowDefinition`]).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::restart::{RestartPolicy, Supervision};
use super::topology::Topology;
use crate::checkpoint::Checkpoints;
use crate::fsm::FsmTable;
use crate::records::FlowShape;
use crate::stage::StageKind;
use crate::stage::actor::{StageFactory, WorkFactory};
use crate::stage::dead_letter::{ItemEncoder, unserializable};
use crate::stage::durable::{Durable, Redeliver, redeliver_json};
use crate::stage::pipe::{MAX_BATCH_SIZE, MAX_PIPE_CAPACITY, PipeConfig};
use crate::stage::replay::ItemDecoder;
use crate::stage::work::{AsSink, AsSource, AsStep, AsTransform, Work};
use crate::stage::{
    EventPolicy, MAX_EVENT_CAPACITY, OnEvent, RetryPolicy, Sink, Source, StageContext, Step,
    Transform,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::type_name;

/// How long a cancelled flow waits for its stages to stop cooperatively
/// before killing them.
pub const DEFAULT_CANCEL_GRACE: Duration = Duration::from_secs(5);

mod dead_letters;
mod error;
mod machines;
mod plan;
mod versioned;
pub use dead_letters::DeadLetterPolicy;
pub use error::DefinitionError;
pub(crate) use plan::{Abandon, ErasedDefinition, FlowPlan, PlannedStage};
pub use versioned::ChangePolicy;

struct StageDef<T> {
    name: String,
    kind: StageKind,
    /// How it takes user events, if it declares any.
    events: Option<EventPolicy>,
    /// The type name of those events (for the fingerprint).
    event_type: Option<&'static str>,
    policy: RestartPolicy,
    retry: RetryPolicy,
    factory: Arc<dyn StageFactory<T>>,
}

/// Assembles a [`FlowDefinition`]; see [`FlowDefinition::builder`].
pub struct FlowBuilder<T> {
    name: String,
    stages: Vec<StageDef<T>>,
    topology: Topology,
    policies: Vec<(String, RestartPolicy)>,
    default_policy: RestartPolicy,
    retries: Vec<(String, RetryPolicy)>,
    default_retry: RetryPolicy,
    supervision: Supervision,
    pipe: PipeConfig,
    cancel_grace: Duration,
    encode: ItemEncoder<T>,
    decode: Option<ItemDecoder<T>>,
    dead_letter: DeadLetterPolicy,
    input: Option<InputType>,
    checkpoints: Checkpoints,
    version: Option<u32>,
    on_change: ChangePolicy,
    /// Declared state machines by stage (for the fingerprint).
    machines: Vec<(String, &'static FsmTable)>,
}

/// The input type a flow declared: its name and a check that a JSON value
/// decodes as it.
#[derive(Clone, Copy)]
pub(crate) struct InputType {
    pub(crate) name: &'static str,
    pub(crate) check: fn(&serde_json::Value) -> Result<(), serde_json::Error>,
}

fn decodes_as<I: DeserializeOwned>(value: &serde_json::Value) -> Result<(), serde_json::Error> {
    I::deserialize(value).map(drop)
}

impl<T: Clone + Send + 'static> FlowBuilder<T> {
    /// Declares the type of the flow's run input: a start whose input does
    /// not decode as `I` is refused with
    /// [`RuntimeError::BadInput`](crate::runtime::RuntimeError::BadInput)
    /// before any run is created, so a stage's
    /// [`StageContext::input::<I>`](crate::stage::StageContext::input)
    /// decodes. Without it, any JSON input is accepted.
    pub fn input<I: DeserializeOwned>(mut self) -> Self {
        self.input = Some(InputType {
            name: std::any::type_name::<I>(),
            check: decodes_as::<I>,
        });
        self
    }

    fn add(
        mut self,
        name: String,
        kind: StageKind,
        events: Option<(EventPolicy, &'static str)>,
        factory: Arc<dyn StageFactory<T>>,
    ) -> Self {
        self.topology.stage(name.clone(), kind);
        self.stages.push(StageDef {
            name,
            kind,
            events: events.map(|e| e.0),
            event_type: events.map(|e| e.1),
            // Resolved in `build`, once every policy call is known.
            policy: RestartPolicy::default(),
            retry: RetryPolicy::default(),
            factory,
        });
        self
    }

    fn add_work<W, F>(
        self,
        name: String,
        events: Option<(EventPolicy, &'static str)>,
        redeliver: Option<Redeliver>,
        factory: F,
    ) -> Self
    where
        W: Work<T>,
        F: Fn(&StageContext) -> W + Send + Sync + 'static,
    {
        let policy = events.map(|e| e.0);
        let factory = Arc::new(WorkFactory::new(factory, policy, redeliver));
        self.add(name, W::KIND, events, factory)
    }

    /// Adds a source; `factory` builds its logic at each (re)start, for the
    /// run and start its [`StageContext`] describes.
    pub fn source<S, F>(self, name: impl Into<String>, factory: F) -> Self
    where
        S: Source<T>,
        F: Fn(&StageContext) -> S + Send + Sync + 'static,
    {
        self.add_work(name.into(), None, None, move |ctx: &StageContext| {
            AsSource::new(factory(ctx))
        })
    }

    /// Adds a transform; `factory` builds its logic at each (re)start, for
    /// the run and start its [`StageContext`] describes.
    pub fn transform<X, F>(self, name: impl Into<String>, factory: F) -> Self
    where
        X: Transform<T>,
        F: Fn(&StageContext) -> X + Send + Sync + 'static,
    {
        self.add_work(name.into(), None, None, move |ctx: &StageContext| {
            AsTransform::new(factory(ctx))
        })
    }

    /// Adds a sink; `factory` builds its logic at each (re)start, for the
    /// run and start its [`StageContext`] describes.
    pub fn sink<K, F>(self, name: impl Into<String>, factory: F) -> Self
    where
        K: Sink<T>,
        F: Fn(&StageContext) -> K + Send + Sync + 'static,
    {
        self.add_work(name.into(), None, None, move |ctx: &StageContext| {
            AsSink::new(factory(ctx))
        })
    }

    /// The next stage added through the returned builder takes user events
    /// of type `Ev` (its logic implements [`OnEvent<Ev>`]), when `policy`
    /// says; send them with a
    /// [`TypedStageHandle`](super::TypedStageHandle). [`EventPolicy`] says
    /// when, by state, the stage takes them and what happens to events still
    /// queued when it completes or is cancelled.
    pub fn with_events<Ev: Send + 'static>(self, policy: EventPolicy) -> EventStageBuilder<T, Ev> {
        EventStageBuilder {
            flow: self,
            policy,
            redeliver: None,
            _event: PhantomData,
        }
    }

    /// The next stage added through the returned builder takes **durable**
    /// user events `E`: each is accepted into the run's journal (its inbox)
    /// before the stage sees it, reaches the stage as a
    /// [`Durable<E>`](crate::stage::Durable) carrying its inbox id, and is
    /// settled once the stage's `on_event` returned; one the stage had not
    /// settled when the process stopped is handed to it again when the run
    /// resumes (at-least-once: deduplicate by id where it matters). Its
    /// logic implements [`OnEvent<Durable<E>>`]. Senders use
    /// [`RunHandle::durable_stage_events`](super::RunHandle::durable_stage_events)
    /// or [`Runtime::send_event`](crate::runtime::Runtime::send_event).
    ///
    /// An event whose `on_event` fails is settled with its error (and
    /// recorded in the failure ledger), so the restarted stage is not handed
    /// it again; one cut short by a crash is.
    pub fn with_durable_events<E>(self, policy: EventPolicy) -> EventStageBuilder<T, Durable<E>>
    where
        E: Serialize + DeserializeOwned + Send + 'static,
    {
        EventStageBuilder {
            flow: self,
            policy,
            redeliver: Some(redeliver_json::<E>),
            _event: PhantomData,
        }
    }

    /// Adds a workflow step: it runs once, after every step it is connected
    /// from has completed, and gets their outputs. Steps connect only to steps.
    pub fn step<S, F>(self, name: impl Into<String>, factory: F) -> Self
    where
        S: Step,
        F: Fn(&StageContext) -> S + Send + Sync + 'static,
    {
        self.add_work(name.into(), None, None, move |ctx: &StageContext| {
            AsStep::new(factory(ctx))
        })
    }

    /// Connects `from` to `to`.
    pub fn edge(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.topology.edge(from, to);
        self
    }

    /// Connects `names` in a chain.
    pub fn pipeline<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.topology.pipeline(names);
        self
    }

    /// The restart policy of every stage without its own
    /// ([`restart`](Self::restart)), wherever this call stands in the chain
    /// (default: [`RestartPolicy::default`], permanent). The last call wins.
    pub fn default_restart(mut self, policy: RestartPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// The restart policy of stage `name` (its restart type and backoff).
    pub fn restart(mut self, name: impl Into<String>, policy: RestartPolicy) -> Self {
        self.policies.push((name.into(), policy));
        self
    }

    /// The retry policy of every stage without its own
    /// ([`retry`](Self::retry)), wherever this call stands in the chain
    /// (default: [`RetryPolicy::default`]). The last call wins.
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_retry = policy;
        self
    }

    /// The retry policy of stage `name`: how an item its logic fails on is
    /// tried again before the stage fails (and is restarted per its
    /// restart policy, keeping the item).
    pub fn retry(mut self, name: impl Into<String>, policy: RetryPolicy) -> Self {
        self.retries.push((name.into(), policy));
        self
    }

    /// How the flow supervises its stages: the restart strategy and the
    /// intensity, counted over all of a run's stages (default:
    /// [`Supervision::default`], one-for-one, at most 1 restart in 5 s).
    /// The last call wins.
    pub fn supervision(mut self, supervision: Supervision) -> Self {
        self.supervision = supervision;
        self
    }

    /// Batch size and capacity of every pipe between stages.
    pub fn pipes(mut self, config: PipeConfig) -> Self {
        self.pipe = config;
        self
    }

    /// When runs take checkpoints (default: every second, kept only while
    /// every running source reports a position; see
    /// [`checkpoint`](crate::checkpoint)). [`Checkpoints::off`] turns them off.
    pub fn checkpoints(mut self, checkpoints: Checkpoints) -> Self {
        self.checkpoints = checkpoints;
        self
    }

    /// How long a cancel waits for stages before killing them (default [`DEFAULT_CANCEL_GRACE`], 5 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = grace;
        self
    }

    /// Rejects queues too large to allocate (tokio would panic).
    fn check_sizes(&self) -> Result<(), DefinitionError> {
        let pipe_sizes = [
            ("batch_size", self.pipe.batch_size, MAX_BATCH_SIZE),
            ("capacity", self.pipe.capacity, MAX_PIPE_CAPACITY),
        ];
        if let Some((field, value, max)) = pipe_sizes.into_iter().find(|(_, v, max)| v > max) {
            return Err(DefinitionError::PipeSize {
                flow: self.name.clone(),
                field,
                value,
                max,
            });
        }
        for def in &self.stages {
            let capacity = def.events.map_or(0, |e| e.queue_capacity());
            if capacity > MAX_EVENT_CAPACITY {
                return Err(DefinitionError::EventCapacity {
                    flow: self.name.clone(),
                    stage: def.name.clone(),
                    capacity,
                    max: MAX_EVENT_CAPACITY,
                });
            }
        }
        Ok(())
    }

    /// Validates the topology, the policies and the sizes of the queues.
    pub fn build(mut self) -> Result<FlowDefinition<T>, DefinitionError> {
        let flow = self.name.clone();
        self.check_sizes()?;
        for def in &mut self.stages {
            def.policy = self.default_policy;
            def.retry = self.default_retry;
        }
        let named = |stages: &mut Vec<StageDef<T>>, stage: String| {
            let found = stages.iter().position(|d| d.name == stage);
            found.ok_or_else(|| DefinitionError::UnknownStage {
                flow: flow.clone(),
                stage,
            })
        };
        for (stage, policy) in std::mem::take(&mut self.policies) {
            let index = named(&mut self.stages, stage)?;
            self.stages[index].policy = policy;
        }
        for (stage, retry) in std::mem::take(&mut self.retries) {
            let index = named(&mut self.stages, stage)?;
            self.stages[index].retry = retry;
        }
        for (stage, _) in &self.machines {
            named(&mut self.stages, stage.clone())?;
        }
        let topology = self
            .topology
            .validate()
            .map_err(|source| DefinitionError::Topology {
                flow: flow.clone(),
                source,
            })?;
        for to in 0..topology.len() {
            for &from in topology.upstream(to) {
                let steps = [from, to].map(|i| topology.kind(i) == StageKind::Step);
                if steps[0] != steps[1] {
                    return Err(DefinitionError::StepWiredToStream {
                        flow,
                        from: topology.name(from).to_owned(),
                        to: topology.name(to).to_owned(),
                    });
                }
            }
        }
        let upstream: Vec<Vec<usize>> = (0..topology.len())
            .map(|i| topology.upstream(i).to_vec())
            .collect();
        let shape = versioned::shape(&self, &upstream);
        let fingerprint = shape.fingerprint(self.version);
        Ok(FlowDefinition {
            inner: Arc::new(DefinitionInner {
                name: self.name,
                stages: self.stages,
                upstream,
                start_order: topology.start_order().to_vec(),
                supervision: self.supervision,
                pipe: self.pipe,
                cancel_grace: self.cancel_grace,
                encode: self.encode,
                decode: self.decode,
                dead_letter: self.dead_letter,
                input: self.input,
                checkpoints: self.checkpoints,
                version: self.version,
                on_change: self.on_change,
                shape,
                fingerprint,
                meter: std::sync::OnceLock::new(),
            }),
        })
    }
}

/// Adds one stage that takes user events `Ev`; see [`FlowBuilder::with_events`].
/// Its logic must implement [`OnEvent<Ev>`], checked by the compiler.
pub struct EventStageBuilder<T, Ev> {
    flow: FlowBuilder<T>,
    policy: EventPolicy,
    redeliver: Option<Redeliver>,
    _event: PhantomData<fn(Ev)>,
}

impl<T: Clone + Send + 'static, Ev: Send + 'static> EventStageBuilder<T, Ev> {
    /// Adds a source taking events `Ev`.
    pub fn source<S, F>(self, name: impl Into<String>, factory: F) -> FlowBuilder<T>
    where
        S: Source<T> + OnEvent<Ev>,
        F: Fn(&StageContext) -> S + Send + Sync + 'static,
    {
        let make = move |ctx: &StageContext| AsSource::<S, Ev>::new(factory(ctx));
        self.flow.add_work(
            name.into(),
            Some((self.policy, type_name::<Ev>())),
            self.redeliver,
            make,
        )
    }

    /// Adds a transform taking events `Ev`.
    pub fn transform<X, F>(self, name: impl Into<String>, factory: F) -> FlowBuilder<T>
    where
        X: Transform<T> + OnEvent<Ev>,
        F: Fn(&StageContext) -> X + Send + Sync + 'static,
    {
        let make = move |ctx: &StageContext| AsTransform::<X, Ev>::new(factory(ctx));
        self.flow.add_work(
            name.into(),
            Some((self.policy, type_name::<Ev>())),
            self.redeliver,
            make,
        )
    }

    /// Adds a sink taking events `Ev`.
    pub fn sink<K, F>(self, name: impl Into<String>, factory: F) -> FlowBuilder<T>
    where
        K: Sink<T> + OnEvent<Ev>,
        F: Fn(&StageContext) -> K + Send + Sync + 'static,
    {
        let make = move |ctx: &StageContext| AsSink::<K, Ev>::new(factory(ctx));
        self.flow.add_work(
            name.into(),
            Some((self.policy, type_name::<Ev>())),
            self.redeliver,
            make,
        )
    }
}

struct DefinitionInner<T> {
    name: String,
    stages: Vec<StageDef<T>>,
    /// Upstreams of each stage, by index (validated).
    upstream: Vec<Vec<usize>>,
    /// Stage indices, each after its upstreams.
    start_order: Vec<usize>,
    supervision: Supervision,
    pipe: PipeConfig,
    cancel_grace: Duration,
    encode: ItemEncoder<T>,
    /// Set by `serde_items`: stages can take replayed items.
    decode: Option<ItemDecoder<T>>,
    dead_letter: DeadLetterPolicy,
    input: Option<InputType>,
    checkpoints: Checkpoints,
    version: Option<u32>,
    on_change: ChangePolicy,
    /// Stages, edges and input type, as the journal records them.
    shape: FlowShape,
    fingerprint: String,
    /// Its stages' metric handles, registered with its first run.
    meter: std::sync::OnceLock<crate::progress::FlowMeter>,
}

/// A validated flow: its stages, topology and policies. Cheap to clone;
/// register it with a runtime under its name and start runs of it.
///
/// A flow is generic over one item type `T` carried on every edge: each
/// stage's logic is monomorphized for it and items move without boxing. A
/// stage with several downstreams sends each of them every item (fan-out
/// clones, hence `T: Clone`); a stage with several upstreams receives the
/// merge of their items (fan-in). Workflow-style flows use steps instead
/// ([`FlowBuilder::step`]): each runs once, after the steps it is connected
/// from, and is handed their outputs.
///
/// ```
/// use troupe::flow::FlowDefinition;
/// use troupe::stage::{Emitter, sink_fn, source_iter, transform_fn};
///
/// let def = FlowDefinition::<u64>::builder("squares")
///     .source("numbers", |_| source_iter(1..=100_u64))
///     .transform("square", |_| transform_fn(|x: u64, out: &mut Emitter<u64>| Ok(out.push(x * x))))
///     .sink("drop", |_| sink_fn(|_x: u64| Ok(())))
///     .pipeline(["numbers", "square", "drop"])
///     .build()
///     .unwrap();
/// assert_eq!(def.name(), "squares");
/// assert_eq!(def.stage_names(), ["numbers", "square", "drop"]);
/// ```
pub struct FlowDefinition<T> {
    inner: Arc<DefinitionInner<T>>,
}

impl<T> Clone for FlowDefinition<T> {
    fn clone(&self) -> Self {
        FlowDefinition {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Clone + Send + 'static> FlowDefinition<T> {
    /// A builder for a flow named `name` (the `controller_id` of its runs).
    pub fn builder(name: impl Into<String>) -> FlowBuilder<T> {
        FlowBuilder {
            name: name.into(),
            stages: Vec::new(),
            topology: Topology::new(),
            policies: Vec::new(),
            default_policy: RestartPolicy::default(),
            retries: Vec::new(),
            default_retry: RetryPolicy::default(),
            supervision: Supervision::default(),
            pipe: PipeConfig::default(),
            cancel_grace: DEFAULT_CANCEL_GRACE,
            encode: unserializable::<T>,
            decode: None,
            dead_letter: DeadLetterPolicy::default(),
            input: None,
            checkpoints: Checkpoints::default(),
            version: None,
            on_change: ChangePolicy::default(),
            machines: Vec::new(),
        }
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The stages' names, in declaration order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.inner.stages.iter().map(|s| s.name.as_str()).collect()
    }
}
