//! Flow definitions as the journal records them: a definition's shape (its
//! stages with their kinds, declared machines and event types, its edges and
//! input type), its optional version and its fingerprint, a stable digest of
//! both. A run records the fingerprint it started with, so that a resume can
//! tell whether the registered definition is still the one it ran on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::fsm::Canonical;

mod changes;
pub use changes::{DefinitionChange, changes_between};

/// Longest flow name, stage name or type name a definition record holds, in bytes.
pub const MAX_DEFINITION_TEXT: usize = 1024;

/// One stage of a recorded definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinedStage {
    /// The stage's name.
    pub name: String,
    /// Its kind: `source`, `transform`, `sink` or `step`.
    pub kind: String,
    /// The type name of the user events it takes, if it declares any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// The digest of the state machine it declared
    /// ([`FsmTable::digest`](crate::fsm::FsmTable::digest)), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// One edge of a recorded definition: `from` feeds (or, for steps, precedes) `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DefinedEdge {
    /// The upstream stage.
    pub from: String,
    /// The downstream stage.
    pub to: String,
}

/// What of a definition decides how its runs resume: its stages, edges
/// and input type. Stages are in declaration order, edges sorted.
///
/// ```
/// use troupe::records::{DefinedEdge, DefinedStage, FlowShape};
///
/// let stage = |name: &str, kind: &str| DefinedStage {
///     name: name.into(), kind: kind.into(), events: None, machine: None,
/// };
/// let shape = FlowShape {
///     stages: vec![stage("a", "step"), stage("b", "step")],
///     edges: vec![DefinedEdge { from: "a".into(), to: "b".into() }],
///     input: None,
/// };
/// assert_eq!(shape.fingerprint(None), shape.clone().fingerprint(None));
/// assert_ne!(shape.fingerprint(None), shape.fingerprint(Some(2)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowShape {
    /// The stages, in declaration order.
    pub stages: Vec<DefinedStage>,
    /// The edges, sorted.
    pub edges: Vec<DefinedEdge>,
    /// The type name of the run input it declared, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

impl FlowShape {
    /// The fingerprint of this shape under `version`: lower-case hex
    /// SHA-256 over a length-prefixed encoding of the version, the input
    /// type, the stages sorted by name (name, kind, event type, machine
    /// digest) and the sorted edges. Declaration order and the flow's name
    /// do not count; the same shape has the same fingerprint in every
    /// process and build.
    pub fn fingerprint(&self, version: Option<u32>) -> String {
        let mut c = Canonical::new("troupe-flow-definition/1");
        c.opt(version.map(|v| v.to_string()).as_deref());
        c.opt(self.input.as_deref());
        let mut stages: Vec<&DefinedStage> = self.stages.iter().collect();
        stages.sort_by(|a, b| a.name.cmp(&b.name));
        c.list(&[&stages.len().to_string()]);
        for s in stages {
            c.field(&s.name).field(&s.kind);
            c.opt(s.events.as_deref()).opt(s.machine.as_deref());
        }
        let mut edges: Vec<&DefinedEdge> = self.edges.iter().collect();
        edges.sort();
        c.list(&[&edges.len().to_string()]);
        for e in edges {
            c.field(&e.from).field(&e.to);
        }
        c.hex()
    }

    /// The stage named `name`, if any.
    pub fn stage(&self, name: &str) -> Option<&DefinedStage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// A flow definition as recorded in the journal when it was registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    /// The flow's name (its runs' `controller_id`).
    pub name: String,
    /// The version its builder declared, if any.
    pub version: Option<u32>,
    /// [`FlowShape::fingerprint`] of `shape` under `version`.
    pub fingerprint: String,
    /// Its stages, edges and input type.
    pub shape: FlowShape,
    /// When it was first recorded.
    pub registered_at: DateTime<Utc>,
}

impl DefinitionRecord {
    /// A record of `shape` under `name` and `version`, fingerprinted, registered now.
    pub fn new(name: impl Into<String>, version: Option<u32>, shape: FlowShape) -> Self {
        DefinitionRecord {
            name: name.into(),
            version,
            fingerprint: shape.fingerprint(version),
            shape,
            registered_at: Utc::now(),
        }
    }

    /// The first 12 characters of the fingerprint, as tables show it.
    pub fn short_fingerprint(&self) -> &str {
        short_fingerprint(&self.fingerprint)
    }

    /// Refuses what a store could not keep or read back: an empty name, a
    /// fingerprint that is not 64 hex digits, text too long or holding a NUL.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        let bad = |field: &'static str, value: &str, why: &'static str| {
            Err(StoreError::InvalidDefinition {
                flow: self.name.chars().take(64).collect(),
                field,
                value: value.chars().take(64).collect(),
                why,
            })
        };
        if self.name.is_empty() {
            return bad("name", "", "a flow name may not be empty");
        }
        if self.fingerprint.len() != 64 || !self.fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return bad(
                "fingerprint",
                &self.fingerprint,
                "a fingerprint is 64 hex digits",
            );
        }
        let mut texts = vec![("name", self.name.as_str())];
        texts.extend(self.shape.input.as_deref().map(|i| ("input", i)));
        for s in &self.shape.stages {
            texts.push(("stage", &s.name));
            texts.push(("kind", &s.kind));
            texts.extend(s.events.as_deref().map(|e| ("events", e)));
            texts.extend(s.machine.as_deref().map(|m| ("machine", m)));
        }
        for e in &self.shape.edges {
            texts.push(("edge", &e.from));
            texts.push(("edge", &e.to));
        }
        for (field, text) in texts {
            if text.len() > MAX_DEFINITION_TEXT {
                return bad(field, text, "longer than MAX_DEFINITION_TEXT (1024) bytes");
            }
            if text.contains('\0') {
                return bad(field, text, "holds a NUL character");
            }
        }
        Ok(())
    }
}

/// The first 12 characters of `fingerprint` (all of it if shorter).
pub fn short_fingerprint(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, kind: &str) -> DefinedStage {
        DefinedStage {
            name: name.into(),
            kind: kind.into(),
            events: None,
            machine: None,
        }
    }

    fn shape() -> FlowShape {
        FlowShape {
            stages: vec![stage("fetch", "step"), stage("ship", "step")],
            edges: vec![DefinedEdge {
                from: "fetch".into(),
                to: "ship".into(),
            }],
            input: Some("Order".into()),
        }
    }

    #[test]
    fn the_fingerprint_is_pinned() {
        // Stable across processes and builds: this value never changes
        // unless the encoding's domain string does.
        assert_eq!(
            shape().fingerprint(Some(1)),
            "308f4449df5f6e5c8fc0dfb6667e4e2440cdf9c7cf2a47e8ab528d23932c979f"
        );
    }

    #[test]
    fn declaration_order_does_not_count_but_everything_else_does() {
        let base = shape().fingerprint(None);
        let mut reordered = shape();
        reordered.stages.reverse();
        assert_eq!(reordered.fingerprint(None), base);
        let mut retyped = shape();
        retyped.stages[1].kind = "sink".into();
        let mut machine = shape();
        machine.stages[0].machine = Some("ab".into());
        let mut input = shape();
        input.input = None;
        let mut edges = shape();
        edges.edges.clear();
        for changed in [retyped, machine, input, edges] {
            assert_ne!(changed.fingerprint(None), base);
        }
        assert_ne!(shape().fingerprint(Some(1)), base);
    }

    #[test]
    fn validate_refuses_bad_records() {
        let good = DefinitionRecord::new("orders", Some(1), shape());
        assert!(good.validate().is_ok());
        assert_eq!(good.short_fingerprint().len(), 12);
        let mut empty = good.clone();
        empty.name.clear();
        let mut fingerprint = good.clone();
        fingerprint.fingerprint = "xyz".into();
        let mut nul = good.clone();
        nul.shape.stages[0].name = "a\0b".into();
        let mut long = good;
        long.shape.input = Some("x".repeat(MAX_DEFINITION_TEXT + 1));
        for bad in [empty, fingerprint, nul, long] {
            assert!(matches!(
                bad.validate(),
                Err(StoreError::InvalidDefinition { .. })
            ));
        }
    }
}
