//! A run's checkpoint coordinator: a task that asks the sources for a
//! barrier when a checkpoint is due, collects every stage's snapshot as the
//! barrier passes it, and commits the checkpoint in one journal write.
//! Several checkpoints may be in flight (they complete in order); it waits
//! on a timer, a notify and a channel, never polls.

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
use crate::progress::ProgressBoard;
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
    /// The run's progress, told of each committed checkpoint.
    progress: Option<Arc<ProgressBoard>>,
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
        progress: None,
    };
    (seed, links)
}

/// A checkpoint asked for and not complete yet.
struct InFlight {
    /// The stages that passed its barrier, with their snapshots.
    passed: BTreeMap<usize, Passed>,
    /// Why it cannot be kept, once a stage took no snapshot.
    declined: Option<String>,
    /// When it is abandoned.
    deadline: Instant,
}

impl InFlight {
    fn new(deadline: Instant) -> Self {
        InFlight {
            passed: BTreeMap::new(),
            declined: None,
            deadline,
        }
    }
}

/// What the coordinator reacts to.
enum Event {
    /// A checkpoint is due.
    Due,
    /// A stage's note.
    Note(Note),
    /// An in-flight checkpoint's deadline passed.
    TimedOut,
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

    /// Tells `board` of each committed checkpoint.
    pub(crate) fn report_to(&mut self, board: Arc<ProgressBoard>) {
        self.progress = Some(board);
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
        if let Some(board) = &self.progress {
            board.checkpoint_committed(checkpoint.id);
        }
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
        let mut next_id = self.last_id + 1;
        let mut next_at = self.config.every.map(|every| Instant::now() + every);
        self.arm_items();
        // Checkpoints asked for and not complete yet, by id: several may be
        // in flight, so that barriers are spaced by the interval in the
        // stream however far a source runs ahead of its sinks.
        let mut pending: BTreeMap<u64, InFlight> = BTreeMap::new();
        loop {
            if pending.is_empty() && !self.any_source_live() {
                return;
            }
            let room = pending.len() < self.config.max_in_flight && self.any_source_live();
            let deadline = pending.values().map(|c| c.deadline).min();
            match self.next_event(room, next_at, deadline).await {
                Event::Gone => return,
                Event::Due => {
                    let started = Instant::now();
                    self.shared.requested.store(next_id, Ordering::Release);
                    pending.insert(next_id, InFlight::new(started + self.config.timeout));
                    next_id += 1;
                    next_at = self.config.every.map(|every| started + every);
                    self.arm_items();
                }
                Event::TimedOut => {
                    let now = Instant::now();
                    pending.retain(|id, c| {
                        let over = c.deadline <= now;
                        if over {
                            self.abandon(run_id, *id, "not every stage passed its barrier in time");
                        }
                        !over
                    });
                }
                Event::Note(Note::Ended { stage }) => self.ended[stage] = true,
                Event::Note(Note::Passed {
                    stage,
                    id,
                    snapshot,
                    items_in,
                    items_out,
                }) => {
                    if let Some(c) = pending.get_mut(&id) {
                        let snapshot = snapshot.unwrap_or_else(|why| {
                            let name = self.name(stage);
                            c.declined
                                .get_or_insert(format!("stage `{name}` took no snapshot: {why}"));
                            None
                        });
                        let passed = Passed {
                            snapshot,
                            items_in,
                            items_out,
                        };
                        c.passed.insert(stage, passed);
                    }
                }
            }
            // Checkpoints complete in id order: a stage passes barriers in order.
            while let Some(entry) = pending.first_entry() {
                if !self.complete(entry.get()) {
                    break;
                }
                let (id, done) = entry.remove_entry();
                if let Some(why) = done.declined {
                    self.abandon(run_id, id, &why);
                    continue;
                }
                if let Some(source) = self.source_without_position(&done.passed) {
                    tracing::info!(%run_id, stage = %source,
                        "checkpoints off for this run: source `{source}` reports no position");
                    return;
                }
                let started = done.deadline - self.config.timeout;
                match self.commit(run_id, id, done.passed, &journal).await {
                    Ok(()) => {
                        metrics::counter!(names::CHECKPOINTS_COMMITTED).increment(1);
                        metrics::histogram!(names::CHECKPOINT_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                        self.settle(|s| s.committed = s.committed.max(id));
                        if let Some(board) = &self.progress {
                            board.checkpoint_committed(id);
                        }
                    }
                    Err(StoreError::RunEnded { .. }) => return,
                    Err(error) => self.abandon(run_id, id, &error.to_string()),
                }
            }
        }
    }

    /// Whether every live stage passed checkpoint `c`'s barrier.
    fn complete(&self, c: &InFlight) -> bool {
        self.members
            .iter()
            .enumerate()
            .all(|(i, m)| m.is_none() || self.ended[i] || c.passed.contains_key(&i))
    }

    /// What comes next: a checkpoint due (only with `room`), a stage's
    /// note, an in-flight checkpoint's deadline, or the run's end.
    async fn next_event(
        &mut self,
        room: bool,
        next_at: Option<Instant>,
        deadline: Option<Instant>,
    ) -> Event {
        loop {
            let by_time = async {
                match next_at.filter(|_| room) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let by_items = async {
                match self.config.every_items.filter(|_| room) {
                    Some(_) => self.shared.items_due.notified().await,
                    None => std::future::pending().await,
                }
            };
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                note = self.notes.recv() => return note.map_or(Event::Gone, Event::Note),
                () = timeout => return Event::TimedOut,
                () = by_time => return Event::Due,
                () = by_items => {
                    // A ring left from before the count was armed again.
                    if self.shared.emitted() >= self.shared.due_at.load(Ordering::Relaxed) {
                        return Event::Due;
                    }
                }
            }
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
        self.settle(|s| s.aborted = s.aborted.max(id));
    }

    fn settle(&self, change: impl FnOnce(&mut Settled)) {
        self.settled.send_modify(change);
        for member in self.members.iter().flatten() {
            if let Some(bell) = &member.bell {
                bell.notify_one();
            }
        }
    }

    /// Arms the next checkpoint by items: `items` after the previous one
    /// was due (not after the count now, which the sources moved on while
    /// this task woke up), so barriers are spaced by the interval on
    /// average; never before the count now.
    fn arm_items(&self) {
        if let Some(items) = self.config.every_items {
            let previous = self.shared.due_at.load(Ordering::Relaxed);
            let emitted = self.shared.emitted();
            let base = if previous == u64::MAX {
                emitted
            } else {
                previous
            };
            let at = base.saturating_add(items).max(emitted.saturating_add(1));
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
