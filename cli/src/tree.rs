//! `troupe runs tree ID`: a run and the runs it started, and theirs, as
//! they land in the journal (each run's `parent_run_id`); and the run's
//! continue-as-new chain, when it belongs to one of more than one run.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;
use troupe::records::{Run, RunFilter};
use troupe::store::Store;
use uuid::Uuid;

use crate::error::CliError;
use crate::read::{run, status};
use crate::render::json;

/// How many children of one run a page reads.
const PAGE: usize = 500;

/// How deep the tree is shown; deeper runs are named, to be shown with
/// their own `runs tree`.
pub const MAX_DEPTH: usize = 32;

/// One run of the tree with the runs it started, oldest first.
#[derive(Serialize)]
struct Node {
    run: Run,
    children: Vec<Node>,
    /// Runs it started that are deeper than [`MAX_DEPTH`] (not read).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    /// For the root, the continue-as-new chain it belongs to, first to last
    /// (empty when it is a chain of one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    chain: Vec<Run>,
}

/// The runs `parent` started, oldest first (every page of them).
async fn children(store: &dyn Store, parent: Uuid) -> Result<Vec<Run>, CliError> {
    let filter = RunFilter {
        parent_run_id: Some(parent),
        ..RunFilter::default()
    };
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_runs(&filter, before, PAGE).await?;
        let full = page.len() == PAGE;
        before = page.last().map(|r| r.id);
        all.extend(page);
        if !full {
            break;
        }
    }
    all.reverse();
    Ok(all)
}

/// The tree under `root`, read breadth first and assembled bottom-up (no
/// recursion: a deep tree cannot overflow the stack). A run met twice (a
/// damaged journal whose parents loop) is shown once.
async fn grow(store: &dyn Store, root: Run) -> Result<Node, CliError> {
    let mut seen = HashSet::from([root.id]);
    let mut order = Vec::new();
    let mut kids: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut runs: HashMap<Uuid, (Run, bool)> = HashMap::new();
    let mut queue = VecDeque::from([(root, 0_usize)]);
    while let Some((run, depth)) = queue.pop_front() {
        let id = run.id;
        order.push(id);
        let mut truncated = false;
        if depth + 1 < MAX_DEPTH {
            for child in children(store, id).await? {
                if seen.insert(child.id) {
                    kids.entry(id).or_default().push(child.id);
                    queue.push_back((child, depth + 1));
                }
            }
        } else {
            truncated = !children_page(store, id).await?;
        }
        runs.insert(id, (run, truncated));
    }
    let mut built: HashMap<Uuid, Node> = HashMap::new();
    for id in order.iter().rev() {
        let Some((run, truncated)) = runs.remove(id) else {
            continue;
        };
        let children = kids
            .remove(id)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| built.remove(c))
            .collect();
        built.insert(
            *id,
            Node {
                run,
                children,
                truncated,
                chain: Vec::new(),
            },
        );
    }
    let root = order.first().and_then(|id| built.remove(id));
    root.ok_or_else(|| CliError::UnknownRun(Uuid::nil()))
}

/// Whether `parent` started no run (one page of one is enough to say).
async fn children_page(store: &dyn Store, parent: Uuid) -> Result<bool, CliError> {
    let filter = RunFilter {
        parent_run_id: Some(parent),
        ..RunFilter::default()
    };
    Ok(store.list_runs(&filter, None, 1).await?.is_empty())
}

/// `troupe runs tree ID`: the run and its descendants, indented, or one
/// nested JSON document.
pub async fn tree(store: &dyn Store, id: Uuid, as_json: bool) -> Result<String, CliError> {
    let mut root = grow(store, run(store, id).await?).await?;
    let chain = troupe::runs::chain(store, id).await?;
    if chain.len() > 1 {
        root.chain = chain;
    }
    if as_json {
        return json(&root);
    }
    let mut text = String::new();
    if !root.chain.is_empty() {
        text.push_str(&format!("chain of {} runs:\n", root.chain.len()));
        for (i, member) in root.chain.iter().enumerate() {
            let this = if member.id == id {
                "  ← this run"
            } else {
                ""
            };
            text.push_str(&format!(
                "  {}. {}  {}{this}\n",
                i + 1,
                member.id,
                status(member)
            ));
        }
    }
    // Depth first, iteratively, for the printout.
    let mut stack = vec![(&root, 0_usize)];
    while let Some((node, depth)) = stack.pop() {
        let run = &node.run;
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└─ ", "   ".repeat(depth - 1))
        };
        let key = run
            .key
            .as_deref()
            .map(|k| format!("  key {k}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "{indent}{}  {}  {}{key}\n",
            run.id,
            run.controller_id,
            status(run)
        ));
        if node.truncated {
            text.push_str(&format!(
                "{}└─ … deeper runs: troupe runs tree {}\n",
                "   ".repeat(depth),
                run.id
            ));
        }
        for child in node.children.iter().rev() {
            stack.push((child, depth + 1));
        }
    }
    Ok(text)
}
