//! Taking back the mutations of a memory-store op that failed part-way, so
//! that every op is atomic.

use uuid::Uuid;

use super::{MemState, output_key};
use crate::records::{Checkpoint, Run, RunStep};

/// How to take back one mutation.
pub(super) enum Undo {
    InsertRun(Uuid),
    /// Restores the key index entry a keyed insert replaced.
    RestoreKey((String, String), Option<Uuid>),
    RestoreFlow(Box<Run>),
    PushEvent,
    PushOutput,
    PushFailure,
    PushDeadLetter,
    PushMemo,
    PushInbox,
    Unsettle(usize),
    InsertStep,
    RestoreStep(usize, Box<RunStep>),
    /// Puts back the run's checkpoint a newer one replaced (`None`: it had none).
    RestoreCheckpoint(Uuid, Option<Box<Checkpoint>>),
    PushDefinition,
}

impl MemState {
    pub(super) fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::PushDefinition => {
                    self.definitions.pop();
                }
                Undo::InsertRun(id) => {
                    self.runs.remove(&id);
                    self.order.pop();
                }
                Undo::RestoreKey(key, previous) => match previous {
                    Some(id) => {
                        self.keys.insert(key, id);
                    }
                    None => {
                        self.keys.remove(&key);
                    }
                },
                Undo::RestoreFlow(flow) => {
                    if let Some(run) = self.runs.get_mut(&flow.id) {
                        run.flow = Some(*flow);
                    }
                }
                Undo::PushEvent => {
                    if let Some(ev) = self.events.pop()
                        && let Some(run) = self.runs.get_mut(&ev.run_id)
                    {
                        run.events.pop();
                        run.keys.remove(&ev.event_id);
                        if ev.kind.as_terminal().is_some() {
                            run.terminal = None;
                        }
                    }
                }
                Undo::PushOutput => {
                    if let Some(o) = self.outputs.pop() {
                        self.output_keys.remove(&output_key(&o));
                    }
                }
                Undo::PushFailure => {
                    self.failures.pop();
                }
                Undo::PushDeadLetter => {
                    self.dead_letters.pop();
                }
                Undo::PushMemo => {
                    if let Some(m) = self.memos.pop() {
                        self.memo_index.remove(&(m.run_id, m.stage, m.name));
                    }
                }
                Undo::PushInbox => {
                    self.inbox.pop();
                }
                Undo::Unsettle(i) => self.inbox[i].settled = None,
                Undo::InsertStep => {
                    if let Some(s) = self.steps.pop() {
                        self.step_index.remove(&(s.run_id, s.external_run_id));
                    }
                }
                Undo::RestoreStep(i, step) => self.steps[i] = *step,
                Undo::RestoreCheckpoint(run_id, previous) => match previous {
                    Some(checkpoint) => {
                        self.checkpoints.insert(run_id, *checkpoint);
                    }
                    None => {
                        self.checkpoints.remove(&run_id);
                    }
                },
            }
        }
    }
}
