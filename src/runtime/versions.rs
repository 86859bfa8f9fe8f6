//! Recording registered definitions in the journal; which registered
//! definition each unfinished run resumes on; the report of a run refused
//! because its definition changed: what changed, read from the definition
//! the journal recorded for its fingerprint.

use std::collections::HashMap;
use std::sync::Arc;

use super::RuntimeError;
use super::registry::{Registry, Resolved};
use super::resume::{ResumeError, ResumeFailure};
use crate::flow::{ChangePolicy, ErasedDefinition};
use crate::journal::JournalHandle;
use crate::records::{
    DefinitionChange, DefinitionRecord, Run, WriteOp, changes_between, short_fingerprint,
};
use crate::store::Store;

/// A run whose recorded definition is no longer registered, refused by the
/// newest definition's [`ChangePolicy`]: the fingerprints and versions on
/// both sides and what changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "flow `{flow}` changed since the run started (recorded {}, registered {}): {}; {}",
    label(.recorded_version, .recorded_fingerprint),
    label(.registered_version, .registered_fingerprint),
    describe(.changes.as_deref()),
    advice(*.policy)
)]
pub struct DefinitionMismatch {
    /// The flow.
    pub flow: String,
    /// The fingerprint the run recorded when it started.
    pub recorded_fingerprint: String,
    /// The version the run recorded.
    pub recorded_version: Option<u32>,
    /// The fingerprint of the newest registered definition.
    pub registered_fingerprint: String,
    /// Its version.
    pub registered_version: Option<u32>,
    /// Its policy, which refused the run.
    pub policy: ChangePolicy,
    /// What changed from the recorded definition to the newest registered
    /// one; `None` when the journal holds no record of the run's definition.
    pub changes: Option<Vec<DefinitionChange>>,
}

fn label(version: &Option<u32>, fingerprint: &str) -> String {
    let short = short_fingerprint(fingerprint);
    match version {
        Some(v) => format!("v{v} {short}"),
        None => short.to_owned(),
    }
}

fn describe(changes: Option<&[DefinitionChange]>) -> String {
    match changes {
        None => "the journal holds no record of the run's definition".to_owned(),
        Some([]) => "only the version changed".to_owned(),
        Some(changes) => changes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn advice(policy: ChangePolicy) -> &'static str {
    match policy {
        ChangePolicy::ResumeWithRecordedVersion => {
            "register the run's recorded version to resume it on that one"
        }
        _ => {
            "register the definition it started on (under its version) to finish it there, \
             or declare `on_change(ChangePolicy::ResumeWithNew)` to resume it on this one"
        }
    }
}

/// Unfinished runs sorted by the definition they resume on.
#[derive(Default)]
pub(crate) struct Sorted {
    /// Runs with the definition each resumes on.
    pub(crate) resumable: Vec<(Run, Arc<dyn ErasedDefinition>)>,
    /// Runs of flows not registered.
    pub(crate) unregistered: Vec<Run>,
    /// Runs refused: their definition changed.
    pub(crate) refused: Vec<ResumeFailure>,
}

/// Sorts `runs` by the definition each resumes on ([`Registry::resolve`]);
/// for refused ones, reads the recorded definitions of their flow (once per
/// flow) to name what changed.
pub(crate) async fn sort_runs(
    registry: &Registry,
    journal: &JournalHandle,
    runs: Vec<Run>,
) -> Sorted {
    let mut sorted = Sorted::default();
    let mut recorded: HashMap<String, Vec<DefinitionRecord>> = HashMap::new();
    for run in runs {
        let resolved = registry.resolve(
            &run.controller_id,
            run.fingerprint.as_deref(),
            run.flow_version,
        );
        let newest = match resolved {
            Resolved::On(definition) => {
                sorted.resumable.push((run, definition));
                continue;
            }
            Resolved::NotRegistered => {
                tracing::warn!(run_id = %run.id, flow = %run.controller_id,
                    "unfinished run of an unregistered flow; left until it is registered");
                sorted.unregistered.push(run);
                continue;
            }
            Resolved::Refused { newest } => newest,
        };
        if !recorded.contains_key(&run.controller_id) {
            let records = match journal.list_definitions(Some(&run.controller_id)).await {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(flow = %run.controller_id, %error,
                        "reading the recorded definitions failed; a refused run's changes are not named");
                    Vec::new()
                }
            };
            recorded.insert(run.controller_id.clone(), records);
        }
        let fingerprint = run.fingerprint.clone().unwrap_or_default();
        let changes = recorded[&run.controller_id]
            .iter()
            .find(|r| r.fingerprint == fingerprint)
            .map(|r| changes_between(&r.shape, newest.shape()));
        let mismatch = DefinitionMismatch {
            flow: run.controller_id.clone(),
            recorded_fingerprint: fingerprint,
            recorded_version: run.flow_version,
            registered_fingerprint: newest.fingerprint().to_owned(),
            registered_version: newest.version(),
            policy: newest.change_policy(),
            changes,
        };
        let error = ResumeError::DefinitionChanged(Box::new(mismatch));
        tracing::error!(run_id = %run.id, flow = %run.controller_id, %error,
            "unfinished run not resumed: its definition changed; left as it is");
        sorted.refused.push(ResumeFailure { run, error });
    }
    sorted
}

/// Records `definitions` in the journal (each once per fingerprint), in one commit.
pub(crate) async fn record_definitions(
    journal: &JournalHandle,
    definitions: &[Arc<dyn ErasedDefinition>],
) -> Result<(), RuntimeError> {
    if definitions.is_empty() {
        return Ok(());
    }
    let ops = definitions
        .iter()
        .map(|d| WriteOp::RecordDefinition(Box::new(d.record())))
        .collect();
    let not_recorded = |i: usize, source| RuntimeError::DefinitionNotRecorded {
        flow: definitions[i].name().to_owned(),
        source,
    };
    let results = journal
        .apply_batch(ops)
        .await
        .map_err(|source| not_recorded(0, source))?;
    for (i, result) in results.into_iter().enumerate() {
        result.map_err(|source| not_recorded(i, source))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mismatch_names_versions_fingerprints_and_changes() {
        let mismatch = DefinitionMismatch {
            flow: "orders".into(),
            recorded_fingerprint: "a".repeat(64),
            recorded_version: Some(1),
            registered_fingerprint: "b".repeat(64),
            registered_version: None,
            policy: ChangePolicy::Refuse,
            changes: Some(vec![DefinitionChange::StageRemoved {
                stage: "ship".into(),
            }]),
        };
        let text = mismatch.to_string();
        assert!(text.contains("recorded v1 aaaaaaaaaaaa"), "{text}");
        assert!(text.contains("registered bbbbbbbbbbbb"), "{text}");
        assert!(text.contains("stage `ship` removed"), "{text}");
        let unknown = DefinitionMismatch {
            changes: None,
            ..mismatch
        };
        assert!(unknown.to_string().contains("no record"), "{unknown}");
    }
}
