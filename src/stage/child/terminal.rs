//! A child's terminal as its parent records it: read from the store,
//! following the child's continue-as-new chain to its last run (a
//! `ContinuedAsNew` run is never a child's terminal).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::super::context::{StageContext, WaitReport};
use super::{ChildError, FIRST_POLL, MAX_POLL};
use crate::records::{EventKind, RunStatus, StoreError, TerminalEvent, continued_run_id};
use crate::store::Store;
use crate::supervise::BoxError;

/// A child's terminal as the parent records it (the memo's value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum ChildTerminal {
    Finished { output: Value },
    Failed { reason: String },
    Cancelled { reason: String },
}

impl StageContext {
    /// The terminal of run `child` as the store has it, once it has one,
    /// following its continue-as-new chain to the last run's: read at once,
    /// then (the stage reported waiting meanwhile, for the run of the chain
    /// it waits for) again at each doorbell or backoff step. The doorbell
    /// is armed before each read, so an end between the read and the wait
    /// rings it.
    pub(super) async fn child_terminal(&self, child: Uuid) -> ChildTerminal {
        let mut waiting: Option<(Uuid, WaitReport<'_>)> = None;
        let mut pause = FIRST_POLL;
        let (mut current, mut hops) = (child, 0_usize);
        loop {
            let doorbell = self.run.launcher.as_ref().and_then(|l| l.doorbell(current));
            match self.read_terminal(current).await {
                Ok(Seen::Ended(terminal)) => return terminal,
                Ok(Seen::Continued(next)) => {
                    hops += 1;
                    if hops > crate::runs::MAX_CHAIN_LEN || next == current {
                        return ChildTerminal::Failed {
                            reason: format!(
                                "the continue-as-new chain of child run {child} is broken at run {current}"
                            ),
                        };
                    }
                    // Not a terminal: the chain's next run is the child now.
                    (current, pause) = (next, FIRST_POLL);
                    continue;
                }
                Ok(Seen::NotYet) => {}
                Err(error) => {
                    tracing::warn!(run_id = %self.run.run_id, child = %current, %error,
                        "reading a child's record failed; reading it again");
                }
            }
            if waiting.as_ref().is_none_or(|(on, _)| *on != current) {
                // The previous report (of an earlier run of the chain) ends first.
                drop(waiting.take());
                let report = self.report_wait(json!({ "for": "child", "child": current }));
                waiting = Some((current, report));
            }
            match doorbell {
                Some(rung) => {
                    tokio::select! {
                        () = rung => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                None => tokio::time::sleep(pause).await,
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// What the store says of run `child`: its terminal, the run it
    /// continued as, or nothing yet (not ended, or not visible yet).
    async fn read_terminal(&self, child: Uuid) -> Result<Seen, BoxError> {
        let journal = &self.run.journal;
        let Some(run) = journal.get_run(child).await? else {
            return Ok(Seen::NotYet);
        };
        if !run.status.is_terminal() {
            return Ok(Seen::NotYet);
        }
        let kind = journal.terminal_event(child).await?.map(|e| e.kind);
        if run.status == RunStatus::ContinuedAsNew {
            return Ok(Seen::Continued(match kind {
                Some(EventKind::Terminal(TerminalEvent::RunContinuedAsNew { next_run_id })) => {
                    next_run_id
                }
                _ => continued_run_id(child),
            }));
        }
        let cancelled = match run.status {
            RunStatus::Cancelled => Some(cancel_reason(journal, child).await?),
            _ => None,
        };
        Ok(Seen::Ended(ChildTerminal::recordable(
            child, run.status, kind, cancelled,
        )?))
    }
}

/// What a read of a child's record found.
enum Seen {
    /// Its terminal, to record.
    Ended(ChildTerminal),
    /// It continued as this run: not a terminal, the chain goes on.
    Continued(Uuid),
    /// Not ended, or not visible yet.
    NotYet,
}

impl ChildTerminal {
    /// What the parent records of child `child`, which ended `status` with
    /// the terminal event `kind` (`cancelled`: why, for a cancelled one).
    /// Refused with [`ChildError::NotATerminal`] for a status that is not a
    /// child's terminal: one that has not ended, or `ContinuedAsNew` (the
    /// chain goes on; its last run's terminal is the child's).
    fn recordable(
        child: Uuid,
        status: RunStatus,
        kind: Option<EventKind>,
        cancelled: Option<String>,
    ) -> Result<ChildTerminal, Box<ChildError>> {
        Ok(match (status, kind) {
            (
                RunStatus::Finished,
                Some(EventKind::Terminal(TerminalEvent::RunCompleted { structured_output })),
            ) => ChildTerminal::Finished {
                output: structured_output.unwrap_or(Value::Null),
            },
            (RunStatus::Finished, _) => ChildTerminal::Finished {
                output: Value::Null,
            },
            (RunStatus::Failed, Some(EventKind::Terminal(TerminalEvent::RunFailed { reason }))) => {
                ChildTerminal::Failed { reason }
            }
            (RunStatus::Failed, _) => ChildTerminal::Failed {
                reason: "failed (no reason recorded)".to_owned(),
            },
            (RunStatus::Cancelled, _) => ChildTerminal::Cancelled {
                reason: cancelled.unwrap_or_else(|| "no reason recorded".to_owned()),
            },
            (status, _) => return Err(Box::new(ChildError::NotATerminal { child, status })),
        })
    }
}

/// Why run `run_id` was cancelled: the last reason its log gives.
async fn cancel_reason(
    journal: &crate::journal::JournalHandle,
    run_id: Uuid,
) -> Result<String, StoreError> {
    let events = journal.replay(run_id).await?;
    let reason = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::Custom { name, payload } if name == "cancel_reason" => payload
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    });
    Ok(reason.unwrap_or_else(|| "no reason recorded".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continue_as_new_outcome_is_refused_as_a_childs_terminal() {
        let child = Uuid::now_v7();
        let next_run_id = continued_run_id(child);
        let continued = Some(EventKind::Terminal(TerminalEvent::RunContinuedAsNew {
            next_run_id,
        }));
        let refused = ChildTerminal::recordable(child, RunStatus::ContinuedAsNew, continued, None)
            .unwrap_err();
        assert!(
            matches!(*refused, ChildError::NotATerminal { child: c, status: RunStatus::ContinuedAsNew } if c == child),
            "{refused}"
        );
        assert!(refused.is_permanent());
        for status in [RunStatus::Created, RunStatus::Running, RunStatus::Waiting] {
            let refused = ChildTerminal::recordable(child, status, None, None);
            assert!(refused.is_err(), "{status:?}");
        }
        let finished = ChildTerminal::recordable(child, RunStatus::Finished, None, None);
        assert_eq!(
            finished.ok(),
            Some(ChildTerminal::Finished {
                output: Value::Null
            })
        );
    }
}
