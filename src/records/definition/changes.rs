//! What changed between two shapes of a flow: stages added, removed,
//! renamed (a removed and an added stage alike in all but their name, when
//! the match is unique), retyped, re-declared; edges added and removed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{DefinedEdge, DefinedStage, FlowShape};

/// One difference between the definition a run recorded and the one
/// registered now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DefinitionChange {
    /// A stage the recorded definition did not have.
    #[error("stage `{stage}` added")]
    StageAdded {
        /// The new stage.
        stage: String,
    },
    /// A stage the registered definition no longer has.
    #[error("stage `{stage}` removed")]
    StageRemoved {
        /// The stage gone.
        stage: String,
    },
    /// A stage alike in kind, events and machine under another name.
    #[error("stage `{from}` renamed to `{to}`")]
    StageRenamed {
        /// Its recorded name.
        from: String,
        /// Its name now.
        to: String,
    },
    /// A stage whose kind changed.
    #[error("stage `{stage}` retyped from {from} to {to}")]
    StageRetyped {
        /// The stage.
        stage: String,
        /// Its recorded kind.
        from: String,
        /// Its kind now.
        to: String,
    },
    /// A stage that takes another type of user events (or starts or stops taking them).
    #[error("stage `{stage}` events changed from {} to {}", show(.from), show(.to))]
    EventsChanged {
        /// The stage.
        stage: String,
        /// The recorded event type.
        from: Option<String>,
        /// The event type now.
        to: Option<String>,
    },
    /// A stage whose declared state machine changed (or was declared or dropped).
    #[error("stage `{stage}` state machine changed")]
    MachineChanged {
        /// The stage.
        stage: String,
    },
    /// An edge the recorded definition did not have.
    #[error("edge `{from}` -> `{to}` added")]
    EdgeAdded {
        /// Its upstream stage.
        from: String,
        /// Its downstream stage.
        to: String,
    },
    /// An edge the registered definition no longer has.
    #[error("edge `{from}` -> `{to}` removed")]
    EdgeRemoved {
        /// Its upstream stage.
        from: String,
        /// Its downstream stage.
        to: String,
    },
    /// The declared run input type changed.
    #[error("input type changed from {} to {}", show(.from), show(.to))]
    InputChanged {
        /// The recorded input type.
        from: Option<String>,
        /// The input type now.
        to: Option<String>,
    },
}

fn show(name: &Option<String>) -> String {
    name.as_ref()
        .map_or_else(|| "none".to_owned(), |n| format!("`{n}`"))
}

/// Alike in all but the name.
fn alike(a: &DefinedStage, b: &DefinedStage) -> bool {
    a.kind == b.kind && a.events == b.events && a.machine == b.machine
}

/// What changed from `before` (the recorded shape) to `after` (the
/// registered one): stage changes in `after`'s declaration order (removed
/// ones in `before`'s), then edge changes sorted, then the input's. Empty
/// when the shapes are the same.
///
/// ```
/// use troupe::records::{DefinedStage, DefinitionChange, FlowShape, changes_between};
///
/// let stage = |name: &str| DefinedStage {
///     name: name.into(), kind: "step".into(), events: None, machine: None,
/// };
/// let before = FlowShape { stages: vec![stage("a")], ..FlowShape::default() };
/// let after = FlowShape { stages: vec![stage("b")], ..FlowShape::default() };
/// assert_eq!(
///     changes_between(&before, &after),
///     [DefinitionChange::StageRenamed { from: "a".into(), to: "b".into() }]
/// );
/// ```
pub fn changes_between(before: &FlowShape, after: &FlowShape) -> Vec<DefinitionChange> {
    let mut changes = Vec::new();
    let removed: Vec<&DefinedStage> = before
        .stages
        .iter()
        .filter(|s| after.stage(&s.name).is_none())
        .collect();
    let added: Vec<&DefinedStage> = after
        .stages
        .iter()
        .filter(|s| before.stage(&s.name).is_none())
        .collect();
    // A rename is a removed and an added stage that only match each other.
    let mut renamed: Vec<(&str, &str)> = Vec::new();
    for old in &removed {
        let candidates: Vec<&&DefinedStage> = added.iter().filter(|n| alike(old, n)).collect();
        if let [new] = candidates[..]
            && removed.iter().filter(|o| alike(o, new)).count() == 1
        {
            renamed.push((&old.name, &new.name));
        }
    }
    let renamed_from = |name: &str| renamed.iter().any(|(from, _)| *from == name);
    let renamed_to = |name: &str| renamed.iter().find(|(_, to)| *to == name).map(|r| r.0);
    for stage in &after.stages {
        let Some(old) = before.stage(&stage.name) else {
            match renamed_to(&stage.name) {
                Some(from) => changes.push(DefinitionChange::StageRenamed {
                    from: from.to_owned(),
                    to: stage.name.clone(),
                }),
                None => changes.push(DefinitionChange::StageAdded {
                    stage: stage.name.clone(),
                }),
            }
            continue;
        };
        if old.kind != stage.kind {
            changes.push(DefinitionChange::StageRetyped {
                stage: stage.name.clone(),
                from: old.kind.clone(),
                to: stage.kind.clone(),
            });
        }
        if old.events != stage.events {
            changes.push(DefinitionChange::EventsChanged {
                stage: stage.name.clone(),
                from: old.events.clone(),
                to: stage.events.clone(),
            });
        }
        if old.machine != stage.machine {
            changes.push(DefinitionChange::MachineChanged {
                stage: stage.name.clone(),
            });
        }
    }
    for old in removed.iter().filter(|s| !renamed_from(&s.name)) {
        changes.push(DefinitionChange::StageRemoved {
            stage: old.name.clone(),
        });
    }
    // Edges compare under the new names, so a rename alone changes none.
    let rename = |name: &str| {
        renamed
            .iter()
            .find(|(from, _)| *from == name)
            .map_or(name, |r| r.1)
            .to_owned()
    };
    let old_edges: BTreeSet<DefinedEdge> = before
        .edges
        .iter()
        .map(|e| DefinedEdge {
            from: rename(&e.from),
            to: rename(&e.to),
        })
        .collect();
    let new_edges: BTreeSet<DefinedEdge> = after.edges.iter().cloned().collect();
    for e in new_edges.difference(&old_edges) {
        changes.push(DefinitionChange::EdgeAdded {
            from: e.from.clone(),
            to: e.to.clone(),
        });
    }
    for e in old_edges.difference(&new_edges) {
        changes.push(DefinitionChange::EdgeRemoved {
            from: e.from.clone(),
            to: e.to.clone(),
        });
    }
    if before.input != after.input {
        changes.push(DefinitionChange::InputChanged {
            from: before.input.clone(),
            to: after.input.clone(),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use DefinitionChange::*;

    fn stage(name: &str, kind: &str) -> DefinedStage {
        DefinedStage {
            name: name.into(),
            kind: kind.into(),
            events: None,
            machine: None,
        }
    }

    fn edge(from: &str, to: &str) -> DefinedEdge {
        DefinedEdge {
            from: from.into(),
            to: to.into(),
        }
    }

    fn chain(stages: &[(&str, &str)]) -> FlowShape {
        FlowShape {
            stages: stages.iter().map(|(n, k)| stage(n, k)).collect(),
            edges: stages.windows(2).map(|w| edge(w[0].0, w[1].0)).collect(),
            input: None,
        }
    }

    #[test]
    fn same_shapes_have_no_changes() {
        let shape = chain(&[("a", "source"), ("b", "sink")]);
        assert!(changes_between(&shape, &shape).is_empty());
    }

    #[test]
    fn added_removed_and_retyped_are_named() {
        let before = chain(&[("a", "source"), ("b", "transform"), ("c", "sink")]);
        let after = chain(&[("a", "source"), ("b", "sink")]);
        let changes = changes_between(&before, &after);
        assert_eq!(
            changes,
            [
                StageRetyped {
                    stage: "b".into(),
                    from: "transform".into(),
                    to: "sink".into()
                },
                StageRemoved { stage: "c".into() },
                EdgeRemoved {
                    from: "b".into(),
                    to: "c".into()
                },
            ]
        );
        assert_eq!(changes[1].to_string(), "stage `c` removed");
    }

    #[test]
    fn a_unique_match_is_a_rename_and_its_edges_follow() {
        let before = chain(&[("a", "source"), ("b", "transform"), ("c", "sink")]);
        let after = chain(&[("a", "source"), ("x", "transform"), ("c", "sink")]);
        assert_eq!(
            changes_between(&before, &after),
            [StageRenamed {
                from: "b".into(),
                to: "x".into()
            }]
        );
    }

    #[test]
    fn an_ambiguous_match_is_removed_and_added() {
        let before = chain(&[("a", "step"), ("b", "step")]);
        let after = chain(&[("x", "step"), ("y", "step")]);
        let changes = changes_between(&before, &after);
        assert!(changes.contains(&StageAdded { stage: "x".into() }));
        assert!(changes.contains(&StageRemoved { stage: "b".into() }));
        assert!(!changes.iter().any(|c| matches!(c, StageRenamed { .. })));
    }

    #[test]
    fn events_machine_and_input_changes_are_named() {
        let before = chain(&[("a", "step")]);
        let mut after = before.clone();
        after.stages[0].events = Some("Approval".into());
        after.stages[0].machine = Some("00".into());
        after.input = Some("Order".into());
        let changes = changes_between(&before, &after);
        assert_eq!(changes.len(), 3);
        assert_eq!(
            changes[0].to_string(),
            "stage `a` events changed from none to `Approval`"
        );
        assert_eq!(changes[1], MachineChanged { stage: "a".into() });
        assert_eq!(
            changes[2].to_string(),
            "input type changed from none to `Order`"
        );
    }
}
