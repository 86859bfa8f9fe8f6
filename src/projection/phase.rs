//! Phases and their guard: the run itself, each stage, each durable wait
//! and each child run is a phase whose status moves only along the moves
//! [`allowed_next`] lists; a phase carries its history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::Causation;
use super::id::LifecycleId;

/// What a phase is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// The run as a whole (its name is `run`).
    Run,
    /// One stage of the run (named by the stage).
    Stage,
    /// One durable wait of a stage: `{stage}/timer/{name}`,
    /// `{stage}/signal/{name}` or `{stage}/child/{child run id}`.
    Wait,
    /// A run this run started (named by the child's run id).
    Child,
}

impl PhaseKind {
    /// Lower-case name (`"stage"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Run => "run",
            PhaseKind::Stage => "stage",
            PhaseKind::Wait => "wait",
            PhaseKind::Child => "child",
        }
    }
}

/// Which phase: its kind and its name, unique within the kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PhaseKey {
    /// What the phase is about.
    pub kind: PhaseKind,
    /// Its name within the kind.
    pub name: String,
}

impl PhaseKey {
    /// The run's own phase.
    pub fn run() -> PhaseKey {
        PhaseKey::new(PhaseKind::Run, "run")
    }

    /// A phase of `kind` named `name`.
    pub fn new(kind: PhaseKind, name: impl Into<String>) -> PhaseKey {
        PhaseKey {
            kind,
            name: name.into(),
        }
    }
}

/// `run`, `stage check`, `wait check/timer/nap`, `child <id>`.
impl std::fmt::Display for PhaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            PhaseKind::Run => f.write_str("run"),
            kind => write!(f, "{} {}", kind.as_str(), self.name),
        }
    }
}

/// A phase's status. Which ones a phase may take depends on its kind
/// (see [`allowed_next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// The run exists, not started.
    Created,
    /// A run, stage or child at work.
    Running,
    /// A run or stage waiting durably; a wait armed.
    Waiting,
    /// A run or child finished successfully.
    Finished,
    /// A run or child failed.
    Failed,
    /// A run or child was cancelled.
    Cancelled,
    /// A stage recorded its output.
    Completed,
    /// A stage given up on (its restarts ran out), or a wait the run ended
    /// during.
    Abandoned,
    /// A stage that was running when its run failed or was cancelled.
    Stopped,
    /// A timer's deadline passed.
    Fired,
    /// A signal wait got its signal.
    Answered,
    /// A signal wait's deadline passed first.
    TimedOut,
    /// A wait for a child saw the child end.
    Resolved,
    /// A run that ended by continuing as a new run.
    ContinuedAsNew,
}

impl PhaseStatus {
    /// Every status, in code order.
    pub const ALL: [PhaseStatus; 14] = [
        PhaseStatus::Created,
        PhaseStatus::Running,
        PhaseStatus::Waiting,
        PhaseStatus::Finished,
        PhaseStatus::Failed,
        PhaseStatus::Cancelled,
        PhaseStatus::Completed,
        PhaseStatus::Abandoned,
        PhaseStatus::Stopped,
        PhaseStatus::Fired,
        PhaseStatus::Answered,
        PhaseStatus::TimedOut,
        PhaseStatus::Resolved,
        PhaseStatus::ContinuedAsNew,
    ];

    /// Lower-case name (`"timed_out"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Created => "created",
            PhaseStatus::Running => "running",
            PhaseStatus::Waiting => "waiting",
            PhaseStatus::Finished => "finished",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Cancelled => "cancelled",
            PhaseStatus::Completed => "completed",
            PhaseStatus::Abandoned => "abandoned",
            PhaseStatus::Stopped => "stopped",
            PhaseStatus::Fired => "fired",
            PhaseStatus::Answered => "answered",
            PhaseStatus::TimedOut => "timed_out",
            PhaseStatus::Resolved => "resolved",
            PhaseStatus::ContinuedAsNew => "continued_as_new",
        }
    }
}

/// The statuses a phase of `kind` may move to from `from` (`None`: the
/// phase does not exist yet). An empty list: the phase has ended.
pub fn allowed_next(kind: PhaseKind, from: Option<PhaseStatus>) -> &'static [PhaseStatus] {
    use PhaseStatus::*;
    match (kind, from) {
        // The run's own moves are the control plane's (`runs::is_legal_move`),
        // plus `Waiting → Waiting` for a wait that changed what it waits for.
        (PhaseKind::Run, None) => &[Created],
        (PhaseKind::Run, Some(Created)) => &[Running, Failed, Cancelled],
        (PhaseKind::Run, Some(Running)) => &[Waiting, Finished, Failed, Cancelled, ContinuedAsNew],
        (PhaseKind::Run, Some(Waiting)) => &[
            Waiting,
            Running,
            Finished,
            Failed,
            Cancelled,
            ContinuedAsNew,
        ],
        // A stage is first seen when its log says something of it, which
        // may be its end: a stage that never waited shows up at the outcome.
        (PhaseKind::Stage, None) => &[Running, Waiting, Completed, Abandoned, Stopped],
        (PhaseKind::Stage, Some(Running)) => &[Waiting, Completed, Abandoned, Stopped],
        (PhaseKind::Stage, Some(Waiting)) => &[Running, Completed, Abandoned, Stopped],
        (PhaseKind::Wait, None) => &[Waiting],
        (PhaseKind::Wait, Some(Waiting)) => &[Fired, Answered, TimedOut, Resolved, Abandoned],
        (PhaseKind::Child, None) => &[Running],
        (PhaseKind::Child, Some(Running)) => &[Finished, Failed, Cancelled],
        _ => &[],
    }
}

/// One status a phase took, and what made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseStep {
    /// The status taken.
    pub status: PhaseStatus,
    /// The lifecycle event that recorded it.
    pub id: LifecycleId,
    /// The journal event that caused it.
    pub caused_by: Causation,
    /// When that journal event was stored.
    pub at: DateTime<Utc>,
}

/// A phase: where it is, how it got there, where it may go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseState {
    /// Which phase.
    pub key: PhaseKey,
    /// Its current status (its history's last).
    pub status: PhaseStatus,
    /// Every status it took, oldest first.
    pub history: Vec<PhaseStep>,
    /// The statuses its guard lets it move to next (empty once it ended).
    pub allowed_next: Vec<PhaseStatus>,
}

impl PhaseState {
    /// A phase entering its first status.
    pub(crate) fn begin(key: PhaseKey, step: PhaseStep) -> PhaseState {
        let allowed_next = allowed_next(key.kind, Some(step.status)).to_vec();
        PhaseState {
            key,
            status: step.status,
            history: vec![step],
            allowed_next,
        }
    }

    /// Records a move the guard allowed.
    pub(crate) fn advance(&mut self, step: PhaseStep) {
        self.status = step.status;
        self.allowed_next = allowed_next(self.key.kind, Some(step.status)).to_vec();
        self.history.push(step);
    }

    /// Whether the phase has ended (no move is allowed from here).
    pub fn is_ended(&self) -> bool {
        self.allowed_next.is_empty()
    }
}

/// A move the guard refused: reported, never recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedTransition {
    /// The phase.
    pub phase: PhaseKey,
    /// Its status then (`None`: it did not exist).
    pub from: Option<PhaseStatus>,
    /// The status the journal event asked for.
    pub to: PhaseStatus,
    /// What the guard allowed instead.
    pub allowed: Vec<PhaseStatus>,
    /// The journal event that asked.
    pub caused_by: Causation,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RunStatus;
    use crate::runs::is_legal_move;

    fn as_run_status(status: PhaseStatus) -> Option<RunStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == status.as_str())
    }

    #[test]
    fn the_run_phase_follows_the_control_planes_moves_plus_a_changed_wait() {
        for from in RunStatus::ALL {
            let phase_from = PhaseStatus::ALL
                .into_iter()
                .find(|p| p.as_str() == from.as_str())
                .unwrap();
            let allowed = allowed_next(PhaseKind::Run, Some(phase_from));
            for to in allowed {
                let to = as_run_status(*to).unwrap();
                assert!(
                    is_legal_move(from, to)
                        || (from, to) == (RunStatus::Waiting, RunStatus::Waiting),
                    "{from:?} -> {to:?}"
                );
            }
            for to in RunStatus::ALL {
                if is_legal_move(from, to) {
                    let to = PhaseStatus::ALL
                        .into_iter()
                        .find(|p| p.as_str() == to.as_str())
                        .unwrap();
                    assert!(allowed.contains(&to), "{from:?} -> {to:?}");
                }
            }
        }
    }

    #[test]
    fn ended_statuses_allow_nothing_whatever_the_kind() {
        use PhaseStatus::*;
        let ended = [
            Finished,
            Failed,
            Cancelled,
            Completed,
            Abandoned,
            Stopped,
            Fired,
            Answered,
            TimedOut,
            Resolved,
            ContinuedAsNew,
        ];
        for kind in [
            PhaseKind::Run,
            PhaseKind::Stage,
            PhaseKind::Wait,
            PhaseKind::Child,
        ] {
            for status in ended {
                assert_eq!(
                    allowed_next(kind, Some(status)),
                    &[] as &[PhaseStatus],
                    "{kind:?} {status:?}"
                );
            }
            assert!(!allowed_next(kind, None).is_empty(), "{kind:?} can begin");
        }
    }
}
