//! Compaction: old lifecycle events fold into a span; every folded id
//! stays resolvable through an alias to the span.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::LifecycleEvent;
use super::id::LifecycleId;

/// Lifecycle events folded into one record by compaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactedSpan {
    /// The span's own id, hashed from the first and last ids it folds.
    pub id: LifecycleId,
    /// How many lifecycle events it folds.
    pub events: usize,
    /// The first folded event's id.
    pub first: LifecycleId,
    /// The last folded event's id.
    pub last: LifecycleId,
    /// When the first folded event's cause was stored.
    pub from: DateTime<Utc>,
    /// When the last folded event's cause was stored.
    pub to: DateTime<Utc>,
    /// The last journal position (`seq`) whose lifecycle events it folds.
    pub through_seq: u64,
}

/// What a lifecycle id resolves to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resolved<'a> {
    /// The event is still in the projection.
    Live(&'a LifecycleEvent),
    /// The event was folded into this span.
    Compacted(&'a CompactedSpan),
}

/// The spans of a projection and the aliases of the ids they fold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Compacted {
    pub(super) spans: Vec<CompactedSpan>,
    /// Folded event id → the id of the span that folds it.
    pub(super) aliases: BTreeMap<LifecycleId, LifecycleId>,
}

impl Compacted {
    /// Folds `events` (oldest first, at least one) into a new span.
    pub(super) fn fold(&mut self, run_id: Uuid, events: Vec<LifecycleEvent>) -> &CompactedSpan {
        let (first, last) = (&events[0], &events[events.len() - 1]);
        let identity = format!("compacted {}..{}", first.id, last.id);
        let span = CompactedSpan {
            id: LifecycleId::derive(run_id, &identity, 1),
            events: events.len(),
            first: first.id,
            last: last.id,
            from: first.at,
            to: last.at,
            through_seq: last.caused_by.seq,
        };
        for event in &events {
            self.aliases.insert(event.id, span.id);
        }
        self.spans.push(span);
        &self.spans[self.spans.len() - 1]
    }

    /// The span folding `id`, if one does.
    pub(super) fn span_of(&self, id: LifecycleId) -> Option<&CompactedSpan> {
        let span = self.aliases.get(&id)?;
        self.spans.iter().find(|s| s.id == *span)
    }

    /// How many events the spans fold.
    pub(super) fn folded(&self) -> usize {
        self.aliases.len()
    }
}
