//! A run's checkpoint coordinator: a task that asks the sources for a
//! barrier when a checkpoint is due, collects every stage's snapshot as the
//! barrier passes it, and commits the checkpoint in one journal write. One
//! checkpoint is in flight at a time; it waits on a timer, a notify and a
//! channel, never polls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::Checkpoints;
use super::link::{CheckpointLink, Note, Settled, Shared};
use crate::journal::JournalHandle;
use crate::metrics as names;
use crate::records::{Checkpoint, StageCheckpoint, StoreError, WriteOp};
use crate::stage::StageKind;
use crate::store::Store;

/// A streaming stage as the coordinator sees it.
#[derive(Debug)]
struct Member {
    name: String,
    kind: StageKind,
    /// Rung when a checkpoint settles: a sink waiting for input learns at
    /// once that its checkpoint is durable.
    bell: Option<Arc<Notify>>,
}

/// Everything the coordinator of one run needs, before it runs.
#[derive(Debug)]
pub(crate) struct CoordinatorSeed {
    config: Checkpoints,
    shared: Arc<Shared>,
    notes: mpsc::UnboundedReceiver<Note>,
    /// Kept for the flow, which tells of stages that ended.
    notes_tx: mpsc::UnboundedSender<Note>,
    settled: watch::Sender<Settled>,
    /// By stage index; `None` for a step (steps carry no items).
    members: Vec<Option<Member>>,
    ended: Vec<bool>,
    last_id: u64,
}

/// The coordinator's seed and each stage's link to it (`None` for steps).
pub(crate) fn wire(
    config: Checkpoints,
    stages: &[(String, StageKind)],
) -> (CoordinatorSeed, Vec<Option<CheckpointLink>>) {
    let shared = Shared::new();
    let (notes_tx, notes) = mpsc::unbounded_channel();
    let (settled, settled_rx) = watch::channel(Settled::default());
    let mut links = Vec::with_capacity(stages.len());
    let mut members = Vec::with_capacity(stages.len());
    for (index, (name, kind)) in stages.iter().enumerate() {
        if *kind == StageKind::Step {
            links.push(None);
            members.push(None);
            continue;
        }
        links.push(Some(CheckpointLink::new(
            index,
            shared.clone(),
            notes_tx.clone(),
            settled_rx.clone(),
        )));
        members.push(Some(Member {
            name: name.clone(),
            kind: *kind,
            bell: None,
        }));
    }
    let seed = CoordinatorSeed {
        config,
        shared,
        notes,
        notes_tx,
        settled,
        ended: vec![false; stages.len()],
        members,
        last_id: 0,
    };
    (seed, links)
}

/// How collecting one checkpoint ended.
enum Collected {
    /// Every stage passed the barrier (or ended): their snapshots by index.
    Complete(BTreeMap<usize, Passed>),
    /// A stage could not take its snapshot, or the timeout passed.
    Abandoned(String),
    /// The run is gone.
    Gone,
}

/// One stage's part of a checkpoint.
struct Passed {
    snapshot: Option<Value>,
    items_in: u64,
    items_out: u64,
}

impl CoordinatorSeed {
    /// Rings `bell` when a checkpoint settles (given for sinks).
    pub(crate) fn ring_on_settle(&mut self, stage: usize, bell: Arc<Notify>) {
        if let Some(Some(member)) = self.members.get_mut(stage) {
            member.bell = Some(bell);
        }
    }

    /// The run resumes from `checkpoint`: ids go on after it, and the
    /// stages that had completed at it are ended.
    pub(crate) fn resume_at(&mut self, checkpoint: &Checkpoint) {
        self.last_id = checkpoint.id;
        self.shared
            .requested
            .store(checkpoint.id, Ordering::Release);
        let _ = self.settled.send(Settled {
            committed: checkpoint.id,
            aborted: 0,
        });
        for (index, member) in self.members.iter().enumerate() {
            let finished = member
                .as_ref()
                .and_then(|m| checkpoint.stages.get(&m.name))
                .is_some_and(|s| s.finished);
            if finished {
                self.ended[index] = true;
            }
        }
    }

    /// How the flow tells the coordinator of a stage that ended.
    pub(crate) fn notes(&self) -> mpsc::UnboundedSender<Note> {
        self.notes_tx.clone()
    }

    /// Starts the coordinator of run `run_id`; it ends with the run (abort
    /// the handle) or once no source is left.
    pub(crate) fn spawn(self, run_id: Uuid, journal: JournalHandle) -> JoinHandle<()> {
        tokio::spawn(self.run(run_id, journal))
    }

    async fn run(mut self, run_id: Uuid, journal: JournalHandle) {
        let mut id = self.last_id;
        let mut next_at = self.config.every.map(|every| Instant::now() + every);
        self.arm_items();
        loop {
            if !self.any_source_live() {
                return;
            }
            if !self.wait_until_due(next_at).await {
                return;
            }
            id += 1;
            let started = Instant::now();
            self.shared.requested.store(id, Ordering::Release);
            match self.collect(id).await {
                Collected::Gone => return,
                Collected::Abandoned(why) => self.abandon(run_id, id, &why),
                Collected::Complete(passed) => {
                    if let Some(source) = self.source_without_position(&passed) {
                        tracing::info!(%run_id, stage = %source,
                            "checkpoints off for this run: source `{source}` reports no position");
                        return;
                    }
                    match self.commit(run_id, id, passed, &journal).await {
                        Ok(()) => {
                            metrics::counter!(names::CHECKPOINTS_COMMITTED).increment(1);
                            metrics::histogram!(names::CHECKPOINT_SECONDS)
                                .record(started.elapsed().as_secs_f64());
                            self.settle(|s| s.committed = id);
                        }
                        Err(StoreError::RunEnded { .. }) => return,
                        Err(error) => self.abandon(run_id, id, &error.to_string()),
                    }
                }
            }
            next_at = self
                .config
                .every
                .map(|every| (started + every).max(Instant::now()));
            self.arm_items();
        }
    }

    /// Waits until a checkpoint is due; `false` once the run is gone or
    /// no source is left.
    async fn wait_until_due(&mut self, next_at: Option<Instant>) -> bool {
        loop {
            let by_time = async {
                match next_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let by_items = async {
                match self.config.every_items {
                    Some(_) => self.shared.items_due.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = by_time => return true,
                () = by_items => {
                    // A ring left from before the count was armed again.
                    if self.shared.emitted() >= self.shared.due_at.load(Ordering::Relaxed) {
                        return true;
                    }
                }
                note = self.notes.recv() => match note {
                    None => return false,
                    Some(Note::Ended { stage }) => {
                        self.ended[stage] = true;
                        if !self.any_source_live() {
                            return false;
                        }
                    }
                    // A late report of an abandoned checkpoint.
                    Some(Note::Passed { .. }) => {}
                },
            }
        }
    }

    /// Collects every live stage's report of checkpoint `id`.
    async fn collect(&mut self, id: u64) -> Collected {
        let deadline = Instant::now() + self.config.timeout;
        let mut passed = BTreeMap::new();
        let mut declined = None;
        loop {
            let waiting = self
                .members
                .iter()
                .enumerate()
                .any(|(i, m)| m.is_some() && !self.ended[i] && !passed.contains_key(&i));
            if !waiting {
                break;
            }
            let note = tokio::select! {
                note = self.notes.recv() => note,
                () = tokio::time::sleep_until(deadline) => {
                    return Collected::Abandoned(format!(
                        "not every stage passed its barrier within {:?}", self.config.timeout
                    ));
                }
            };
            match note {
                None => return Collected::Gone,
                Some(Note::Ended { stage }) => self.ended[stage] = true,
                Some(Note::Passed {
                    stage,
                    id: of,
                    snapshot,
                    items_in,
                    items_out,
                }) if of == id => {
                    let snapshot = snapshot.unwrap_or_else(|why| {
                        let name = self.name(stage);
                        declined.get_or_insert(format!("stage `{name}` took no snapshot: {why}"));
                        None
                    });
                    passed.insert(
                        stage,
                        Passed {
                            snapshot,
                            items_in,
                            items_out,
                        },
                    );
                }
                Some(Note::Passed { .. }) => {}
            }
        }
        match declined {
            Some(why) => Collected::Abandoned(why),
            None => Collected::Complete(passed),
        }
    }

    /// A live source that passed the barrier without a position: the run
    /// cannot resume from a checkpoint, so none is kept.
    fn source_without_position(&self, passed: &BTreeMap<usize, Passed>) -> Option<String> {
        passed.iter().find_map(|(index, p)| {
            let member = self.members[*index].as_ref()?;
            (member.kind == StageKind::Source && p.snapshot.is_none()).then(|| member.name.clone())
        })
    }

    async fn commit(
        &self,
        run_id: Uuid,
        id: u64,
        mut passed: BTreeMap<usize, Passed>,
        journal: &JournalHandle,
    ) -> Result<(), StoreError> {
        let mut stages = BTreeMap::new();
        for (index, member) in self.members.iter().enumerate() {
            let Some(member) = member else { continue };
            let stage = match passed.remove(&index) {
                Some(p) => StageCheckpoint {
                    finished: false,
                    state: p.snapshot,
                    items_in: p.items_in,
                    items_out: p.items_out,
                },
                None => StageCheckpoint {
                    finished: true,
                    state: None,
                    items_in: 0,
                    items_out: 0,
                },
            };
            stages.insert(member.name.clone(), stage);
        }
        let checkpoint = Checkpoint {
            run_id,
            id,
            taken_at: Utc::now(),
            stages,
        };
        journal
            .apply(WriteOp::RecordCheckpoint(Box::new(checkpoint)))
            .await
            .map(|_| ())
    }

    fn abandon(&self, run_id: Uuid, id: u64, why: &str) {
        // The run goes on; the next checkpoint is taken as usual. The
        // metric is the durable trace (nothing was lost: the previous
        // checkpoint stands).
        tracing::warn!(%run_id, checkpoint = id, why, "checkpoint abandoned");
        metrics::counter!(names::CHECKPOINTS_ABANDONED).increment(1);
        self.settle(|s| s.aborted = id);
    }

    fn settle(&self, change: impl FnOnce(&mut Settled)) {
        self.settled.send_modify(change);
        for member in self.members.iter().flatten() {
            if let Some(bell) = &member.bell {
                bell.notify_one();
            }
        }
    }

    fn arm_items(&self) {
        if let Some(items) = self.config.every_items {
            let at = self.shared.emitted().saturating_add(items);
            self.shared.due_at.store(at, Ordering::Relaxed);
        }
    }

    fn any_source_live(&self) -> bool {
        self.members
            .iter()
            .zip(&self.ended)
            .any(|(m, ended)| !ended && m.as_ref().is_some_and(|m| m.kind == StageKind::Source))
    }

    fn name(&self, stage: usize) -> &str {
        self.members
            .get(stage)
            .and_then(Option::as_ref)
            .map_or("?", |m| m.name.as_str())
    }
}
