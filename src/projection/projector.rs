//! The projection of one run: lifecycle events, phases, refusals; fed
//! journal events in log order, each at most once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::compact::{Compacted, CompactedSpan, Resolved};
use super::error::ProjectionError;
use super::event::{Causation, LifecycleEvent, LifecycleRecord};
use super::id::LifecycleId;
use super::interpret::{Intent, interpret};
use super::phase::{PhaseKey, PhaseState, PhaseStatus, PhaseStep, RefusedTransition, allowed_next};
use crate::records::RunEvent;

/// A journal event the lifecycle follows whose payload lacks a field it
/// reads: it moved nothing, and is reported here instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreadableEvent {
    /// The event.
    pub caused_by: Causation,
    /// Its kind name.
    pub kind: String,
    /// The field that is missing or of the wrong type.
    pub field: String,
}

/// What [`Projection::apply`] did with one journal event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was projected before (its `seq` is not past
    /// [`Projection::through_seq`]): nothing changed.
    AlreadyProjected,
    /// The event was projected now.
    Projected {
        /// Lifecycle events it added.
        added: usize,
        /// Moves it asked for that the guard refused.
        refused: usize,
    },
}

/// The lifecycle of one run, projected from its journal events.
///
/// It is plain data (`Serialize`, `Deserialize`): a projector that keeps it
/// and is restarted feeds it the run's log again, from the start or from
/// where it stopped, and gets what one uninterrupted projection gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    run_id: Uuid,
    /// The last journal position projected (0: none).
    through_seq: u64,
    /// Lifecycle events not compacted, oldest first.
    events: Vec<LifecycleEvent>,
    /// How many times each record identity occurred.
    occurrences: BTreeMap<String, u32>,
    #[serde(with = "phase_list")]
    phases: BTreeMap<PhaseKey, PhaseState>,
    refused: Vec<RefusedTransition>,
    unreadable: Vec<UnreadableEvent>,
    compacted: Compacted,
}

impl Projection {
    /// An empty projection of run `run_id`.
    pub fn new(run_id: Uuid) -> Projection {
        Projection {
            run_id,
            through_seq: 0,
            events: Vec::new(),
            occurrences: BTreeMap::new(),
            phases: BTreeMap::new(),
            refused: Vec::new(),
            unreadable: Vec::new(),
            compacted: Compacted::default(),
        }
    }

    /// The run projected.
    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// The last journal position (`seq`) projected; 0 before any.
    pub fn through_seq(&self) -> u64 {
        self.through_seq
    }

    /// The lifecycle events not compacted, oldest first.
    pub fn events(&self) -> &[LifecycleEvent] {
        &self.events
    }

    /// Every phase, the run's first, then stages, waits and children by name.
    pub fn phases(&self) -> impl Iterator<Item = &PhaseState> {
        self.phases.values()
    }

    /// One phase, if the run's log has named it.
    pub fn phase(&self, key: &PhaseKey) -> Option<&PhaseState> {
        self.phases.get(key)
    }

    /// The moves the guard refused, oldest first.
    pub fn refused(&self) -> &[RefusedTransition] {
        &self.refused
    }

    /// Journal events that should have moved the lifecycle but could not be read.
    pub fn unreadable(&self) -> &[UnreadableEvent] {
        &self.unreadable
    }

    /// The spans compaction made, oldest first.
    pub fn compacted(&self) -> &[CompactedSpan] {
        &self.compacted.spans
    }

    /// How many lifecycle events compaction folded.
    pub fn compacted_events(&self) -> usize {
        self.compacted.folded()
    }

    /// Projects the journal events `events` (the run's log, in order);
    /// how many lifecycle events they added. Events projected before are
    /// skipped, so the same log projected twice adds nothing.
    pub fn project<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a RunEvent>,
    ) -> Result<usize, ProjectionError> {
        let mut added = 0;
        for event in events {
            if let Applied::Projected { added: n, .. } = self.apply(event)? {
                added += n;
            }
        }
        Ok(added)
    }

    /// Projects one journal event of the run: records the moves its guard
    /// allows and the notes it makes, reports the moves it refuses.
    pub fn apply(&mut self, event: &RunEvent) -> Result<Applied, ProjectionError> {
        if event.run_id != self.run_id {
            return Err(ProjectionError::WrongRun {
                expected: self.run_id,
                found: event.run_id,
                event_id: event.event_id.clone(),
            });
        }
        if event.seq <= self.through_seq {
            return Ok(Applied::AlreadyProjected);
        }
        let caused_by = Causation::of(event);
        let intents = interpret(event, &self.phases).unwrap_or_else(|missing| {
            self.unreadable.push(UnreadableEvent {
                caused_by: caused_by.clone(),
                kind: event.kind.name().to_owned(),
                field: missing.0.to_owned(),
            });
            Vec::new()
        });
        let (before, refused_before) = (self.events.len(), self.refused.len());
        for intent in intents {
            match intent {
                Intent::Move(key, to) => self.move_phase(key, to, event),
                Intent::Note(note) => {
                    self.record(LifecycleRecord::Note { note }, event);
                }
            }
        }
        self.through_seq = event.seq;
        Ok(Applied::Projected {
            added: self.events.len() - before,
            refused: self.refused.len() - refused_before,
        })
    }

    /// Moves phase `key` to `to` if its guard allows it, else reports it.
    fn move_phase(&mut self, key: PhaseKey, to: PhaseStatus, event: &RunEvent) {
        let from = self.phases.get(&key).map(|p| p.status);
        let allowed = allowed_next(key.kind, from);
        if !allowed.contains(&to) {
            self.refused.push(RefusedTransition {
                phase: key,
                from,
                to,
                allowed: allowed.to_vec(),
                caused_by: Causation::of(event),
            });
            return;
        }
        let record = LifecycleRecord::Phase {
            phase: key.clone(),
            status: to,
        };
        let id = self.record(record, event);
        let step = PhaseStep {
            status: to,
            id,
            caused_by: Causation::of(event),
            at: event.at,
        };
        match self.phases.get_mut(&key) {
            Some(phase) => phase.advance(step),
            None => {
                self.phases
                    .insert(key.clone(), PhaseState::begin(key, step));
            }
        }
    }

    /// Appends a lifecycle event for `record`, at its next occurrence.
    fn record(&mut self, record: LifecycleRecord, event: &RunEvent) -> LifecycleId {
        let identity = record.identity();
        let occurrence = self.occurrences.entry(identity.clone()).or_insert(0);
        *occurrence += 1;
        let id = LifecycleId::derive(self.run_id, &identity, *occurrence);
        self.events.push(LifecycleEvent {
            id,
            occurrence: *occurrence,
            record,
            caused_by: Causation::of(event),
            at: event.at,
        });
        id
    }

    /// Folds every lifecycle event but the newest `keep` into one span;
    /// their ids resolve to it from then on ([`resolve`](Self::resolve)).
    /// Phases, occurrence counts and what was projected are kept, so ids
    /// of later events are those an uncompacted projection gives them.
    /// `None` when there was nothing to fold.
    pub fn compact(&mut self, keep: usize) -> Option<&CompactedSpan> {
        let fold = self.events.len().checked_sub(keep).filter(|n| *n > 0)?;
        let folded: Vec<LifecycleEvent> = self.events.drain(..fold).collect();
        Some(self.compacted.fold(self.run_id, folded))
    }

    /// The lifecycle event `id`, or the span it was compacted into.
    pub fn resolve(&self, id: LifecycleId) -> Option<Resolved<'_>> {
        if let Some(span) = self.compacted.span_of(id) {
            return Some(Resolved::Compacted(span));
        }
        self.events.iter().find(|e| e.id == id).map(Resolved::Live)
    }
}

/// Phases as a JSON list: their keys are structs, which JSON maps cannot
/// have as keys.
mod phase_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{PhaseKey, PhaseState};

    pub(super) fn serialize<S: Serializer>(
        phases: &BTreeMap<PhaseKey, PhaseState>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(phases.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<PhaseKey, PhaseState>, D::Error> {
        let list = Vec::<PhaseState>::deserialize(deserializer)?;
        Ok(list.into_iter().map(|p| (p.key.clone(), p)).collect())
    }
}
