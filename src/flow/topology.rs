//! The shape of a flow: named stages of a [`StageKind`] and the edges between
//! them, checked before anything starts (the user-facing docs are on
//! [`Topology`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::stage::StageKind;

/// A rejected topology, naming what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The flow has no stage.
    #[error("the flow has no stages")]
    Empty,
    /// Two stages share a name.
    #[error("stage `{0}` is declared twice")]
    DuplicateStage(String),
    /// A stage's name is empty or `*` (which stands for every stage of a
    /// run in its inbox).
    #[error("stage name {0:?} is reserved; name the stage something else")]
    ReservedName(String),
    /// An edge names a stage that is not declared.
    #[error("edge `{from}` -> `{to}` names `{missing}`, which is not a declared stage")]
    DanglingEdge {
        /// Upstream end of the edge.
        from: String,
        /// Downstream end of the edge.
        to: String,
        /// The end that names no stage.
        missing: String,
    },
    /// The same edge is declared twice.
    #[error("edge `{from}` -> `{to}` is declared twice")]
    DuplicateEdge {
        /// Upstream end.
        from: String,
        /// Downstream end.
        to: String,
    },
    /// The edges form a cycle; `path` lists its stages, first repeated last.
    #[error("the stages form a cycle: {}", path.join(" -> "))]
    Cycle {
        /// The stages on the cycle, e.g. `["a", "b", "a"]`.
        path: Vec<String>,
    },
    /// A source has an upstream.
    #[error("source `{stage}` has an input from `{from}`; sources take no input")]
    SourceHasInput {
        /// The source.
        stage: String,
        /// Its upstream.
        from: String,
    },
    /// A sink has a downstream.
    #[error("sink `{stage}` has an output to `{to}`; sinks produce no output")]
    SinkHasOutput {
        /// The sink.
        stage: String,
        /// Its downstream.
        to: String,
    },
    /// A stage misses the input or output its kind needs.
    #[error("{kind:?} stage `{stage}` has no {missing}; connect it or remove it")]
    Unconnected {
        /// The stage.
        stage: String,
        /// Its kind.
        kind: StageKind,
        /// `"input"` or `"output"`.
        missing: &'static str,
    },
}

/// A flow's stages and edges as declared, not yet checked.
///
/// [`Topology::validate`] rejects an empty flow, duplicate stage names, edges
/// that name no stage (dangling), duplicate edges, cycles (naming the stages
/// on one), and stages wired against their kind (a source with an input, a
/// sink with an output, a transform missing either). What it returns, the
/// validated topology, gives each stage an index and a start order in which
/// every stage comes after all of its upstreams.
///
/// ```
/// use troupe::flow::{Topology, TopologyError};
/// use troupe::stage::StageKind;
///
/// let mut t = Topology::new();
/// t.stage("orders", StageKind::Source)
///     .stage("validate", StageKind::Transform)
///     .stage("audit", StageKind::Sink)
///     .stage("store", StageKind::Sink)
///     .edge("orders", "validate")
///     .edge("validate", "store") // fan-out
///     .edge("validate", "audit");
/// let valid = t.validate().unwrap();
/// assert_eq!(valid.start_order_names(), ["orders", "validate", "audit", "store"]);
///
/// t.edge("store", "validate");
/// assert!(matches!(t.validate(), Err(TopologyError::SinkHasOutput { .. })));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    stages: Vec<(String, StageKind)>,
    edges: Vec<(String, String)>,
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a stage.
    pub fn stage(&mut self, name: impl Into<String>, kind: StageKind) -> &mut Self {
        self.stages.push((name.into(), kind));
        self
    }

    /// Declares an edge: items (or, for steps, completion) flow from `from` to `to`.
    pub fn edge(&mut self, from: impl Into<String>, to: impl Into<String>) -> &mut Self {
        self.edges.push((from.into(), to.into()));
        self
    }

    /// Declares a chain of edges through `names`, in order.
    pub fn pipeline<S: Into<String>>(&mut self, names: impl IntoIterator<Item = S>) -> &mut Self {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        for pair in names.windows(2) {
            self.edge(pair[0].clone(), pair[1].clone());
        }
        self
    }

    /// Checks the topology; see [`Topology`] for what it rejects.
    pub fn validate(&self) -> Result<ValidatedTopology, TopologyError> {
        if self.stages.is_empty() {
            return Err(TopologyError::Empty);
        }
        let mut index = HashMap::with_capacity(self.stages.len());
        for (i, (name, _)) in self.stages.iter().enumerate() {
            if name.is_empty() || name == "*" {
                return Err(TopologyError::ReservedName(name.clone()));
            }
            if index.insert(name.as_str(), i).is_some() {
                return Err(TopologyError::DuplicateStage(name.clone()));
            }
        }
        let n = self.stages.len();
        let mut downstream = vec![Vec::new(); n];
        let mut upstream = vec![Vec::new(); n];
        for (from, to) in &self.edges {
            let lookup = |name: &String| {
                index
                    .get(name.as_str())
                    .copied()
                    .ok_or_else(|| TopologyError::DanglingEdge {
                        from: from.clone(),
                        to: to.clone(),
                        missing: name.clone(),
                    })
            };
            let (f, t) = (lookup(from)?, lookup(to)?);
            if downstream[f].contains(&t) {
                return Err(TopologyError::DuplicateEdge {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            downstream[f].push(t);
            upstream[t].push(f);
        }
        self.check_kinds(&upstream, &downstream)?;
        let order = self.start_order(&upstream, &downstream)?;
        Ok(ValidatedTopology {
            stages: self.stages.clone(),
            upstream,
            downstream,
            order,
        })
    }

    fn check_kinds(
        &self,
        upstream: &[Vec<usize>],
        downstream: &[Vec<usize>],
    ) -> Result<(), TopologyError> {
        for (i, (name, kind)) in self.stages.iter().enumerate() {
            let unconnected = |missing| TopologyError::Unconnected {
                stage: name.clone(),
                kind: *kind,
                missing,
            };
            match kind {
                StageKind::Source => {
                    if let Some(&from) = upstream[i].first() {
                        return Err(TopologyError::SourceHasInput {
                            stage: name.clone(),
                            from: self.stages[from].0.clone(),
                        });
                    }
                    if downstream[i].is_empty() {
                        return Err(unconnected("output"));
                    }
                }
                StageKind::Sink => {
                    if let Some(&to) = downstream[i].first() {
                        return Err(TopologyError::SinkHasOutput {
                            stage: name.clone(),
                            to: self.stages[to].0.clone(),
                        });
                    }
                    if upstream[i].is_empty() {
                        return Err(unconnected("input"));
                    }
                }
                StageKind::Transform if upstream[i].is_empty() => return Err(unconnected("input")),
                StageKind::Transform if downstream[i].is_empty() => {
                    return Err(unconnected("output"));
                }
                StageKind::Transform | StageKind::Step => {}
            }
        }
        Ok(())
    }

    /// Kahn's algorithm, taking ready stages in declaration order; a leftover
    /// stage means a cycle, which is then walked to name it.
    fn start_order(
        &self,
        upstream: &[Vec<usize>],
        downstream: &[Vec<usize>],
    ) -> Result<Vec<usize>, TopologyError> {
        let n = self.stages.len();
        let mut waiting: Vec<usize> = upstream.iter().map(Vec::len).collect();
        let mut done = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let Some(next) = (0..n).find(|&i| !done[i] && waiting[i] == 0) else {
                return Err(self.cycle_through(
                    (0..n).find(|&i| !done[i]).unwrap_or(0),
                    upstream,
                    &done,
                ));
            };
            done[next] = true;
            order.push(next);
            for &d in &downstream[next] {
                waiting[d] -= 1;
            }
        }
        Ok(order)
    }

    /// Every stage left after Kahn's algorithm has an unfinished upstream, so
    /// following upstreams from `start` must revisit a stage: that loop is a cycle.
    fn cycle_through(&self, start: usize, upstream: &[Vec<usize>], done: &[bool]) -> TopologyError {
        let mut seen_at = vec![None; self.stages.len()];
        let mut walk = Vec::new();
        let mut at = start;
        loop {
            if let Some(pos) = seen_at[at] {
                // Downstream order, starting at the earliest declared stage.
                let mut cycle: Vec<usize> = walk[pos..].iter().rev().copied().collect();
                let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                cycle.rotate_left(first);
                cycle.push(cycle[0]);
                let path = cycle.iter().map(|&i| self.stages[i].0.clone()).collect();
                return TopologyError::Cycle { path };
            }
            seen_at[at] = Some(walk.len());
            walk.push(at);
            at = upstream[at]
                .iter()
                .copied()
                .find(|&u| !done[u])
                .unwrap_or(at);
        }
    }
}

/// A checked topology: stages by index, their neighbours, and a start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedTopology {
    stages: Vec<(String, StageKind)>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    order: Vec<usize>,
}

impl ValidatedTopology {
    /// Number of stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Always `false`: a valid topology has stages.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Name of stage `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.stages[index].0
    }

    /// Kind of stage `index`.
    pub fn kind(&self, index: usize) -> StageKind {
        self.stages[index].1
    }

    /// Index of the stage called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|(n, _)| n == name)
    }

    /// Stages feeding stage `index`.
    pub fn upstream(&self, index: usize) -> &[usize] {
        &self.upstream[index]
    }

    /// Stages fed by stage `index`.
    pub fn downstream(&self, index: usize) -> &[usize] {
        &self.downstream[index]
    }

    /// Stage indices such that each comes after all of its upstreams.
    pub fn start_order(&self) -> &[usize] {
        &self.order
    }

    /// [`start_order`](Self::start_order) as names.
    pub fn start_order_names(&self) -> Vec<&str> {
        self.order.iter().map(|&i| self.name(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StageKind::*;

    fn err(t: &Topology) -> String {
        t.validate().unwrap_err().to_string()
    }

    #[test]
    fn pipelines_and_dags_validate() {
        let mut t = Topology::new();
        t.stage("src", Source)
            .stage("a", Transform)
            .stage("b", Transform)
            .stage("join", Transform)
            .stage("out", Sink)
            .edge("src", "a")
            .edge("src", "b")
            .edge("a", "join")
            .edge("b", "join")
            .edge("join", "out");
        let v = t.validate().unwrap();
        assert_eq!(v.start_order_names(), ["src", "a", "b", "join", "out"]);
        let join = v.index_of("join").unwrap();
        assert_eq!(v.upstream(join).len(), 2);
        assert_eq!(v.kind(join), Transform);
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn empty_and_every_stage_names_are_reserved() {
        for name in ["", "*"] {
            let mut t = Topology::new();
            t.stage(name, Source);
            assert_eq!(
                t.validate().unwrap_err(),
                TopologyError::ReservedName(name.to_owned())
            );
        }
    }

    #[test]
    fn steps_may_stand_alone_or_be_ordered() {
        let mut t = Topology::new();
        t.stage("charge", Step)
            .stage("ship", Step)
            .stage("notify", Step);
        t.pipeline(["charge", "ship"]);
        assert_eq!(
            t.validate().unwrap().start_order_names(),
            ["charge", "ship", "notify"]
        );
    }

    #[test]
    fn structural_errors_name_what_to_fix() {
        assert_eq!(err(&Topology::new()), "the flow has no stages");
        let mut t = Topology::new();
        t.stage("a", Step).stage("a", Step);
        assert_eq!(err(&t), "stage `a` is declared twice");
        let mut t = Topology::new();
        t.stage("a", Source).stage("b", Sink).edge("a", "c");
        assert_eq!(
            err(&t),
            "edge `a` -> `c` names `c`, which is not a declared stage"
        );
        let mut t = Topology::new();
        t.stage("a", Source)
            .stage("b", Sink)
            .edge("a", "b")
            .edge("a", "b");
        assert_eq!(err(&t), "edge `a` -> `b` is declared twice");
        let mut t = Topology::new();
        t.stage("a", Source)
            .stage("b", Source)
            .stage("c", Sink)
            .pipeline(["a", "b", "c"]);
        assert_eq!(
            err(&t),
            "source `b` has an input from `a`; sources take no input"
        );
        let mut t = Topology::new();
        t.stage("a", Source)
            .stage("t", Transform)
            .stage("c", Sink)
            .edge("a", "c");
        assert_eq!(
            err(&t),
            "Transform stage `t` has no input; connect it or remove it"
        );
        let mut t = Topology::new();
        t.stage("a", Source);
        assert_eq!(
            err(&t),
            "Source stage `a` has no output; connect it or remove it"
        );
    }

    #[test]
    fn cycles_are_named() {
        let mut t = Topology::new();
        t.stage("src", Source)
            .stage("a", Transform)
            .stage("b", Transform)
            .stage("c", Transform)
            .stage("out", Sink)
            .pipeline(["src", "a", "b", "c", "out"])
            .edge("c", "a");
        assert_eq!(err(&t), "the stages form a cycle: a -> b -> c -> a");
        let mut t = Topology::new();
        t.stage("loop", Step).edge("loop", "loop");
        assert_eq!(err(&t), "the stages form a cycle: loop -> loop");
    }
}
