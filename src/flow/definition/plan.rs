//! A run's plan: its stages over freshly built pipes, erased over the item
//! type, and how a resumed run skips what it already completed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;

use super::{DeadLetterPolicy, FlowDefinition};
use crate::checkpoint::coordinator::{CoordinatorSeed, wire};
use crate::flow::restart::{RestartPolicy, Supervision};
use crate::progress::{FlowMeter, ProgressBoard, StageCounters, StageSpec};
use crate::records::{Checkpoint, StageCheckpoint, StepOutput};
use crate::stage::StageKind;
use crate::stage::actor::Spawner;
use crate::stage::events::EventPort;
use crate::stage::inlet::Inlet;
use crate::stage::pipe::pipe;
use crate::stage::ports::{Input, PortSlot, Ports};
use crate::stage::replay::{ItemReplay, replay_queue};
use crate::supervise::BoxFuture;

/// One stage of a run about to start.
pub(crate) struct PlannedStage {
    pub(crate) name: String,
    pub(crate) kind: StageKind,
    pub(crate) policy: RestartPolicy,
    pub(crate) spawn: Spawner,
    /// Rung around each control or user event sent to the stage.
    pub(crate) doorbell: Arc<Notify>,
    /// The sending end of its user-event queue, if it declares events.
    pub(crate) events: Option<EventPort>,
    /// Queues replayed items into its input, if it can take them (a
    /// transform or sink of a flow with `serde_items`).
    pub(crate) replay: Option<ItemReplay>,
    /// Drops the stage's pipe ends (closing its outputs): for a stage that
    /// will not run because it completed before a restart.
    retire: Box<dyn Fn() + Send + Sync>,
    /// Hands the stage its part of the checkpoint a resumed run starts from.
    resume_at: ResumeAt,
    /// Winds the stage's pipe ends down once it is abandoned (see [`wind_down`]).
    pub(crate) abandon: Abandon,
    /// The output recorded before a restart, if the stage completed then.
    pub(crate) recorded: Option<Value>,
    /// Whether it completed before its input ended (a machine stage in a
    /// terminal state) and an upstream runs again: its input is dropped.
    pub(crate) input_left: bool,
    /// Stages feeding this one (for a step: the steps it waits for).
    pub(crate) upstream: Vec<usize>,
    /// Its live counters, kept by the run's cell.
    pub(crate) counters: Arc<StageCounters>,
}

/// Hands a stage its part of checkpoint `id`.
type ResumeAt = Box<dyn Fn(u64, &StageCheckpoint) + Send + Sync>;

/// Builds the task that winds an abandoned stage's pipe ends down.
pub(crate) type Abandon = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// What is left of an abandoned stage, once its last actor handed its
/// ports back: what it emitted goes downstream, then the end of its input
/// (each output is finished, or dropped if its downstream is gone); its
/// inbox and every batch that reaches it later are dropped, so that its
/// upstream never waits on it or sees it gone. Ends with its input.
async fn wind_down<T: Clone + Send + 'static>(slot: Arc<PortSlot<T>>) {
    let mut ports = slot.lease().await;
    // Items a gone downstream refuses are lost with it.
    let _ = ports.send_outbox().await;
    ports.outbox.clear();
    // Each failed finish drops the output it failed on, so this ends.
    while ports.finish_outputs().await.is_err() {}
    // Never rung: waiting for input ends only with a batch or the end.
    let never = Notify::new();
    loop {
        ports.drop_pending();
        if ports.next_input(&never).await == Input::Ended {
            return;
        }
    }
}

/// A run's stages over freshly built pipes, erased over the item type.
pub(crate) struct FlowPlan {
    pub(crate) stages: Vec<PlannedStage>,
    /// Stage indices, each after its upstreams.
    pub(crate) start_order: Vec<usize>,
    pub(crate) supervision: Supervision,
    pub(crate) cancel_grace: Duration,
    pub(crate) dead_letter: DeadLetterPolicy,
    /// The run's checkpoint coordinator, if the flow takes checkpoints.
    pub(crate) checkpoints: Option<CoordinatorSeed>,
}

impl FlowPlan {
    /// Marks the stages with a recorded output as completed (they will not
    /// run again; downstream sees their outputs end at once) — except a
    /// streaming stage that feeds a stage still unfinished, directly or
    /// through others: the items it sent died with the process, so it runs
    /// again (stage work is at-least-once; its first recorded output stays).
    ///
    /// With a `checkpoint`, the streaming stages it covers resume from it
    /// instead: those it saw completed stay retired, the others get their
    /// snapshot back (a source re-emits from its position), whatever was
    /// recorded after it.
    pub(crate) fn resume_from(&mut self, outputs: &[StepOutput], checkpoint: Option<&Checkpoint>) {
        let recorded = |name: &str| {
            outputs
                .iter()
                .find(|o| o.iteration.is_none() && o.step_id == name)
        };
        let covered: Vec<Option<&StageCheckpoint>> = self
            .stages
            .iter()
            .map(|s| checkpoint.and_then(|c| c.stages.get(&s.name)))
            .collect();
        let mut done: Vec<bool> = self
            .stages
            .iter()
            .zip(&covered)
            .map(|(s, c)| c.map_or_else(|| recorded(&s.name).is_some(), |c| c.finished))
            .collect();
        // Unfinished consumers un-retire their streaming producers, to a
        // fixpoint; a checkpoint's cut already holds what its stages sent.
        let mut changed = true;
        while changed {
            changed = false;
            for (index, stage) in self.stages.iter().enumerate() {
                if done[index] || stage.kind == StageKind::Step {
                    continue;
                }
                for &producer in &stage.upstream {
                    if done[producer] && covered[producer].is_none() {
                        done[producer] = false;
                        changed = true;
                    }
                }
            }
        }
        // A stage that completed before its input ended (a machine stage)
        // keeps its ports while an upstream runs again, which the flow
        // drops what reaches it through, rather than failing that upstream.
        let input_left: Vec<bool> = (self.stages.iter().enumerate())
            .map(|(i, s)| done[i] && s.upstream.iter().any(|&p| !done[p]))
            .collect();
        let stages = self
            .stages
            .iter_mut()
            .zip(done)
            .zip(&covered)
            .zip(input_left);
        for (((stage, done), covered), input_left) in stages {
            if done {
                if input_left {
                    stage.input_left = true;
                } else {
                    (stage.retire)();
                }
                stage.recorded = recorded(&stage.name).map(|o| o.output.clone());
            } else if let (Some(part), Some(checkpoint)) = (covered, checkpoint) {
                (stage.resume_at)(checkpoint.id, part);
            }
            // Progress starts from the cut, retired stages' counts included.
            if let (Some(part), Some(checkpoint)) = (covered, checkpoint) {
                let counters = &stage.counters;
                counters.start_at(part.items_in, part.items_out);
                counters.passed_barrier(checkpoint.id);
            }
        }
        if let (Some(seed), Some(checkpoint)) = (self.checkpoints.as_mut(), checkpoint) {
            seed.resume_at(checkpoint);
        }
    }
}

/// What the runtime's registry holds: a definition with its item type erased.
pub(crate) trait ErasedDefinition: Send + Sync {
    fn name(&self) -> &str;
    /// Builds the pipes of a new run and the stages over them, counting
    /// on `board`.
    fn plan(&self, board: &Arc<ProgressBoard>) -> FlowPlan;
    /// The counters of a new run's progress.
    fn progress_board(&self) -> Arc<ProgressBoard>;
    /// Checks a new run's input against the flow's declared input type, if
    /// it declared one; why it does not decode.
    fn check_input(&self, input: &serde_json::Value) -> Result<(), String>;
    /// The stages' names, in declaration order.
    fn stage_names(&self) -> Arc<[String]>;
    /// Whether its runs may take checkpoints (a resumed run reads its last one).
    fn takes_checkpoints(&self) -> bool;
    /// Its declared version.
    fn version(&self) -> Option<u32>;
    /// Its fingerprint.
    fn fingerprint(&self) -> &str;
    /// What a resume does with a run that started on another definition.
    fn change_policy(&self) -> super::ChangePolicy;
    /// Its stages and edges.
    fn shape(&self) -> &crate::records::FlowShape;
    /// The record a runtime journals when it is registered.
    fn record(&self) -> crate::records::DefinitionRecord;
}

impl<T: Clone + Send + 'static> ErasedDefinition for FlowDefinition<T> {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn stage_names(&self) -> Arc<[String]> {
        self.inner.stages.iter().map(|s| s.name.clone()).collect()
    }

    fn progress_board(&self) -> Arc<ProgressBoard> {
        let def = &self.inner;
        let specs = def
            .stages
            .iter()
            .zip(&def.upstream)
            .map(|(stage, upstream)| StageSpec {
                name: stage.name.clone(),
                // Steps carry no items: their edges only order them.
                feeds_from: match stage.kind {
                    StageKind::Step => Vec::new(),
                    _ => upstream.clone(),
                },
            })
            .collect();
        // Registered with the first run: a recorder installed after the
        // flow was built, before it ran, sees its stages.
        let meter = def.meter.get_or_init(|| {
            let stages = def.stages.iter().zip(&def.upstream).enumerate();
            let stages = stages.map(|(index, (stage, upstream))| {
                let items = stage.kind != StageKind::Step;
                let feeds = def.upstream.iter().any(|up| up.contains(&index));
                (
                    stage.name.as_str(),
                    items && !upstream.is_empty(),
                    items && feeds,
                )
            });
            FlowMeter::new(&def.name, stages)
        });
        ProgressBoard::metered(meter, specs)
    }

    fn version(&self) -> Option<u32> {
        FlowDefinition::version(self)
    }

    fn fingerprint(&self) -> &str {
        FlowDefinition::fingerprint(self)
    }

    fn change_policy(&self) -> super::ChangePolicy {
        FlowDefinition::change_policy(self)
    }

    fn shape(&self) -> &crate::records::FlowShape {
        FlowDefinition::shape(self)
    }

    fn record(&self) -> crate::records::DefinitionRecord {
        FlowDefinition::record(self)
    }

    fn takes_checkpoints(&self) -> bool {
        let def = &self.inner;
        def.checkpoints.is_on() && def.stages.iter().any(|s| s.kind == StageKind::Source)
    }

    fn check_input(&self, input: &serde_json::Value) -> Result<(), String> {
        match self.inner.input {
            Some(ty) => {
                (ty.check)(input).map_err(|e| format!("it does not decode as {}: {e}", ty.name))
            }
            None => Ok(()),
        }
    }

    fn plan(&self, board: &Arc<ProgressBoard>) -> FlowPlan {
        let def = &self.inner;
        let n = def.stages.len();
        let mut inputs: Vec<_> = (0..n).map(|_| None).collect();
        let mut outputs: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for (stage, upstream) in def.upstream.iter().enumerate() {
            // Steps carry no items: their edges only order them.
            if upstream.is_empty() || def.stages[stage].kind == StageKind::Step {
                continue;
            }
            // A pipe per edge: a stage with several upstreams aligns their
            // checkpoint barriers, which needs each one's pipe on its own.
            let mut pipes = Vec::with_capacity(upstream.len());
            for &u in upstream {
                let (tx, rx) = pipe::<T>(def.pipe);
                outputs[u].push(tx);
                pipes.push(rx);
            }
            inputs[stage] = Some(Inlet::new(pipes));
        }
        let (mut checkpoints, mut links) = if self.takes_checkpoints() {
            let kinds: Vec<_> = def
                .stages
                .iter()
                .map(|s| (s.name.clone(), s.kind))
                .collect();
            let (mut seed, links) = wire(def.checkpoints, &kinds);
            seed.report_to(board.clone());
            (Some(seed), links)
        } else {
            (None, Vec::new())
        };
        let stages = def
            .stages
            .iter()
            .zip(inputs.into_iter().zip(outputs))
            .zip(&def.upstream)
            .enumerate()
            .map(|(index, ((stage, (input, outputs)), upstream))| {
                let counters = board.counters(index);
                let mut ports = Ports::new(input, outputs, def.pipe.batch_size, def.encode);
                ports.checkpoint = links.get_mut(index).and_then(Option::take);
                // A step counts no items; its retries are added as they come.
                ports.counters = (stage.kind != StageKind::Step).then(|| counters.clone());
                let takes_items = matches!(stage.kind, StageKind::Transform | StageKind::Sink);
                let replay = def.decode.filter(|_| takes_items).map(|decode| {
                    let (replay, replays) = replay_queue(decode);
                    ports.replays = Some(replays);
                    replay
                });
                let slot = PortSlot::new(ports);
                let (retired, abandoned, resumed) = (slot.clone(), slot.clone(), slot.clone());
                let doorbell = Arc::new(Notify::new());
                if let (Some(seed), StageKind::Sink) = (checkpoints.as_mut(), stage.kind) {
                    seed.ring_on_settle(index, doorbell.clone());
                }
                let (spawn, events) =
                    stage
                        .factory
                        .clone()
                        .for_run(slot, doorbell.clone(), stage.retry);
                PlannedStage {
                    name: stage.name.clone(),
                    kind: stage.kind,
                    policy: stage.policy,
                    spawn,
                    doorbell,
                    events,
                    replay,
                    retire: Box::new(move || drop(retired.take())),
                    resume_at: Box::new(move |id, part| resumed.update(|p| p.resume_at(id, part))),
                    abandon: Box::new(move || Box::pin(wind_down(abandoned.clone()))),
                    recorded: None,
                    input_left: false,
                    upstream: upstream.clone(),
                    counters,
                }
            })
            .collect();
        FlowPlan {
            stages,
            start_order: def.start_order.clone(),
            supervision: def.supervision,
            cancel_grace: def.cancel_grace,
            dead_letter: def.dead_letter,
            checkpoints,
        }
    }
}
