//! Versioned definitions: a flow's version, the fingerprint of what decides
//! how its runs resume, the state machines its stages declare, and what a
//! resume does with a run that started on another definition.
//!
//! ```
//! use troupe::flow::{ChangePolicy, FlowDefinition};
//! use troupe::stage::step_fn;
//!
//! let v2 = FlowDefinition::<()>::builder("orders")
//!     .version(2)
//!     .on_change(ChangePolicy::ResumeWithRecordedVersion)
//!     .step("charge", |_| step_fn(|_| async { Ok(serde_json::Value::Null) }))
//!     .build()
//!     .unwrap();
//! assert_eq!(v2.version(), Some(2));
//! assert_eq!(v2.fingerprint().len(), 64);
//! assert_eq!(v2.shape().stages[0].kind, "step");
//! ```

use serde::{Deserialize, Serialize};

use super::{FlowBuilder, FlowDefinition};
use crate::fsm::FsmTable;
use crate::records::{DefinedEdge, DefinedStage, DefinitionRecord, FlowShape};
use crate::stage::StageKind;

/// What a resume does with an unfinished run whose recorded fingerprint
/// matches no registered definition of its flow (a run whose fingerprint
/// one matches always resumes on that one; a run recorded before
/// fingerprints existed resumes on the newest). Declared on the newest
/// definition, the one new runs start on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePolicy {
    /// Leave the run as it is and report it
    /// ([`ResumeError::DefinitionChanged`](crate::runtime::ResumeError::DefinitionChanged),
    /// naming what changed); registering a definition it matches later
    /// resumes it. The default.
    #[default]
    Refuse,
    /// Resume it on the newest definition, changes and all (stages are
    /// matched by name: a completed stage does not run again, a new one runs).
    ResumeWithNew,
    /// Resume it on the definition registered under the version the run
    /// recorded (refused as [`Refuse`](Self::Refuse) does if none is).
    ResumeWithRecordedVersion,
}

impl<T: Clone + Send + 'static> FlowBuilder<T> {
    /// The definition's version (default none). Several versions of one
    /// flow may be registered on a runtime: new runs start on the highest,
    /// and a run resumes on the one whose fingerprint it recorded. Part of
    /// the fingerprint. The last call wins.
    pub fn version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// What a resume does with a run that started on a definition no
    /// longer registered (default [`ChangePolicy::Refuse`]). The last call wins.
    pub fn on_change(mut self, policy: ChangePolicy) -> Self {
        self.on_change = policy;
        self
    }

    /// Declares the state machine stage `name` drives (its `fsm!` table,
    /// e.g. [`StateMachine::table`](crate::fsm::StateMachine::table)), so
    /// that the fingerprint changes when the machine does: a run journaled
    /// in a state the new machine lacks is not resumed blindly. `build`
    /// refuses an unknown stage. The last call for a stage wins. A machine
    /// stage ([`machine_stage`](Self::machine_stage)) declares its own.
    pub fn machine(mut self, name: impl Into<String>, table: &'static FsmTable) -> Self {
        let name = name.into();
        self.machines.retain(|(stage, _)| *stage != name);
        self.machines.push((name, table));
        self
    }
}

/// A stage kind as definition records spell it.
fn kind_name(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Source => "source",
        StageKind::Transform => "transform",
        StageKind::Sink => "sink",
        StageKind::Step => "step",
    }
}

/// The shape of a definition being built: its stages (declaration order)
/// with `upstream[i]` the upstreams of stage `i`.
pub(super) fn shape<T>(builder: &FlowBuilder<T>, upstream: &[Vec<usize>]) -> FlowShape {
    let stages: Vec<DefinedStage> = builder
        .stages
        .iter()
        .map(|def| DefinedStage {
            name: def.name.clone(),
            kind: kind_name(def.kind).to_owned(),
            events: def.event_type.map(str::to_owned),
            machine: builder
                .machines
                .iter()
                .find(|(stage, _)| *stage == def.name)
                .map(|(_, table)| table.digest()),
        })
        .collect();
    let mut edges: Vec<DefinedEdge> = upstream
        .iter()
        .enumerate()
        .flat_map(|(to, froms)| {
            let stages = &stages;
            froms.iter().map(move |&from| DefinedEdge {
                from: stages[from].name.clone(),
                to: stages[to].name.clone(),
            })
        })
        .collect();
    edges.sort();
    FlowShape {
        stages,
        edges,
        input: builder.input.map(|i| i.name.to_owned()),
    }
}

impl<T: Clone + Send + 'static> FlowDefinition<T> {
    /// The version its builder declared, if any.
    pub fn version(&self) -> Option<u32> {
        self.inner.version
    }

    /// Its fingerprint: [`FlowShape::fingerprint`] of [`shape`](Self::shape)
    /// under [`version`](Self::version), recorded by every run it starts.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// Its stages (with kinds, event types and declared machines), edges
    /// and input type: what the journal records when it is registered.
    pub fn shape(&self) -> &FlowShape {
        &self.inner.shape
    }

    /// What a resume does with a run that started on another definition.
    pub fn change_policy(&self) -> ChangePolicy {
        self.inner.on_change
    }

    /// The record a runtime journals when it is registered (registered now).
    pub fn record(&self) -> DefinitionRecord {
        DefinitionRecord {
            name: self.inner.name.clone(),
            version: self.inner.version,
            fingerprint: self.inner.fingerprint.clone(),
            shape: self.inner.shape.clone(),
            registered_at: chrono::Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::DefinitionError;
    use crate::stage::step_fn;

    static TABLE: FsmTable = FsmTable {
        state_type: "S",
        event_type: "E",
        states: &["A"],
        events: &[],
        handlers: &[],
        entry_hooks: &[],
        exit_hooks: &[],
        timeouts: &[],
        has_unhandled_hook: false,
        unhandled_targets: None,
        initial: Some("A"),
        terminals: &[],
        all_states: &["A"],
        all_events: &[],
    };
    static OTHER: FsmTable = FsmTable {
        initial: None,
        ..TABLE
    };

    fn builder() -> FlowBuilder<()> {
        FlowDefinition::builder("f")
            .step("a", |_| step_fn(|_| async { Ok(serde_json::Value::Null) }))
            .step("b", |_| step_fn(|_| async { Ok(serde_json::Value::Null) }))
            .edge("a", "b")
    }

    #[test]
    fn the_shape_and_fingerprint_follow_what_decides_a_resume() {
        let plain = builder().build().unwrap();
        assert_eq!(plain.shape().edges.len(), 1);
        assert_eq!(
            plain.fingerprint(),
            builder().build().unwrap().fingerprint()
        );
        assert_eq!(plain.change_policy(), ChangePolicy::Refuse);
        let machine = builder().machine("b", &TABLE).build().unwrap();
        assert_eq!(machine.shape().stages[1].machine, Some(TABLE.digest()));
        let other = builder().machine("b", &OTHER).build().unwrap();
        let input = builder().input::<u32>().build().unwrap();
        let version = builder().version(1).build().unwrap();
        let fingerprints = [&plain, &machine, &other, &input, &version].map(|d| d.fingerprint());
        for (i, a) in fingerprints.iter().enumerate() {
            for b in &fingerprints[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // Policies and sizes are not part of it.
        let policy = builder()
            .on_change(ChangePolicy::ResumeWithNew)
            .build()
            .unwrap();
        assert_eq!(policy.fingerprint(), plain.fingerprint());
        assert_eq!(plain.record().fingerprint, plain.fingerprint());
    }

    #[test]
    fn a_machine_of_an_unknown_stage_is_refused() {
        let error = builder().machine("nope", &TABLE).build().err().unwrap();
        assert!(
            matches!(error, DefinitionError::UnknownStage { ref stage, .. } if stage == "nope"),
            "{error}"
        );
    }
}
