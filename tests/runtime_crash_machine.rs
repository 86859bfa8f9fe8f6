//! A durable machine stage, SIGKILLed again and again: a child process
//! starts (or resumes) the run `crash-machine` on an SQLite journal; its
//! `meter` stage is an `fsm!` machine that flips between `Low` and `High`
//! as items stream by, then waits (`Waiting`, a one-hour timeout) for an
//! `Approve` event. The parent kills the child at points it reports: in the
//! first rounds mid-stream (the machine's handler for a chosen item never
//! returns, with batches before it journaled), in the next ones mid-wait
//! (well after `Waiting` was journaled). After each kill the parent reads
//! the machine's last journaled state and context from the journal, and the
//! next child reports the state and context its machine resumed in (the
//! first event it handles says so): they must be the same. A last child
//! resumes the wait, approves, and the run finishes in `Done`.
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_CRASH_MACHINE_CHILD` set it is the child.

#[path = "support/child.rs"]
mod child;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use child::{Running, completed_output, say};
use serde::{Deserialize, Serialize};
use serde_json::json;
use troupe::checkpoint::Checkpoints;
use troupe::flow::{FlowDefinition, RunOptions};
use troupe::fsm::{
    EventVariant, HandlerFuture, NoAction, StateMachine, StateVariant, Transition, fsm,
};
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{
    EventPolicy, MachineContext, MachineStage, PipeConfig, StageContext, StageInput, sink_fn,
    source_iter,
};
use troupe::store::{SqliteStore, Store};

const CHILD_ENV: &str = "TROUPE_CRASH_MACHINE_CHILD";
/// The item whose handling never returns in this child (mid-stream kills).
const PAUSE_ENV: &str = "TROUPE_CRASH_MACHINE_PAUSE";
/// Set for the last child: it approves and waits for the outcome.
const APPROVE_ENV: &str = "TROUPE_CRASH_MACHINE_APPROVE";
const RUN_KEY: &str = "crash-machine";
/// Items each child's source streams (from 1 again in every process).
const ITEMS: u64 = 1_100;
/// The item that makes the machine wait.
const WAIT_AT: u64 = 1_000;
/// Items a child's machine takes while waiting before it says `waiting`:
/// more than two batches, so the batch that entered `Waiting` (and its
/// journal write) is done with.
const WAITED: u64 = 25;
/// Kills mid-stream, each at its item (each in another state and batch).
const PAUSES: [u64; 4] = [120, 170, 340, 777];
/// Kills mid-wait, after those.
const WAIT_ROUNDS: usize = 3;

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(PathBuf::from(dir)),
        None => parent(),
    }
}

// ---- the machine ----

#[derive(Debug, Clone, PartialEq, StateVariant, Serialize, Deserialize)]
enum Meter {
    Low,
    High,
    Waiting,
    Done,
}

#[derive(Debug, EventVariant)]
enum Ev {
    Item(u64),
    Approve,
}

/// What the tests tell the meter.
#[derive(Debug)]
struct Approve;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    seen: u64,
    flips: u64,
    /// Items taken while waiting, in this process.
    #[serde(skip)]
    waited: u64,
    /// Whether this process's machine said what it resumed in.
    #[serde(skip)]
    said: bool,
}

type Ctx = MachineContext<u64, Count>;

/// The first event a process's machine handles says the state and context
/// it started (or resumed) in.
fn note(ctx: &mut Ctx, state: &Meter) {
    if !ctx.said {
        ctx.said = true;
        say(&format!(
            "resumed {} {} {}",
            state.variant_name(),
            ctx.seen,
            ctx.flips
        ));
    }
}

fn pause_at() -> Option<u64> {
    static PAUSE: OnceLock<Option<u64>> = OnceLock::new();
    *PAUSE.get_or_init(|| std::env::var(PAUSE_ENV).ok().and_then(|p| p.parse().ok()))
}

/// An item while streaming: counts it, flips at every 100th (to `High`)
/// and 50th past it (to `Low`), waits at `WAIT_AT`; the pause item never
/// returns.
fn stream(state: &Meter, e: &Ev, ctx: &mut Ctx) -> HandlerFuture<'static, Meter, NoAction<Ctx>> {
    note(ctx, state);
    let Ev::Item(x) = *e else { unreachable!() };
    if pause_at() == Some(x) {
        say(&format!("paused {x}"));
        return Box::pin(std::future::pending());
    }
    ctx.seen += 1;
    let next = match (state, x % 100) {
        _ if x == WAIT_AT => Meter::Waiting,
        (Meter::Low, 0) => Meter::High,
        (Meter::High, 50) => Meter::Low,
        _ => state.clone(),
    };
    if next != *state && next != Meter::Waiting {
        ctx.flips += 1;
    }
    Box::pin(std::future::ready(Ok(Transition::to(next))))
}

fn meter() -> StateMachine<Meter, Ev, Ctx, NoAction<Ctx>> {
    fsm! {
        state: Meter; event: Ev; context: Ctx; initial: Meter::Low;
        terminal: Meter::Done;
        state Meter::Low {
            on Ev::Item => [Meter::Low, Meter::High, Meter::Waiting] |s, e, ctx| stream(s, e, ctx);
        }
        state Meter::High {
            on Ev::Item => [Meter::High, Meter::Low, Meter::Waiting] |s, e, ctx| stream(s, e, ctx);
        }
        state Meter::Waiting {
            on Ev::Item => [Meter::Waiting] sync |s, _, ctx| {
                note(ctx, s);
                ctx.waited += 1;
                if ctx.waited == WAITED {
                    say("waiting");
                }
                Transition::to(Meter::Waiting)
            };
            on Ev::Approve => [Meter::Done] sync |s, _, ctx| {
                note(ctx, s);
                Transition::to(Meter::Done)
            };
            timeout Duration::from_secs(3_600) => [Meter::Done] sync |_, _| Transition::to(Meter::Done);
        }
        state Meter::Done {}
    }
}

fn flow() -> FlowDefinition<u64> {
    let stage = MachineStage::new(
        meter,
        |_: &StageContext| Count::default(),
        |input| match input {
            StageInput::Item(x) => Some(Ev::Item(x)),
            StageInput::Event(Approve) => Some(Ev::Approve),
            // The end of input changes nothing: the wait goes on.
            StageInput::End => None,
        },
    )
    .durable()
    .output(|_, count: &Count| json!({ "seen": count.seen, "flips": count.flips }));
    FlowDefinition::<u64>::builder("metered")
        .source("numbers", |_| source_iter(1..=ITEMS))
        .with_events::<Approve>(EventPolicy::default())
        .machine_stage("meter", stage)
        .sink("out", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "meter", "out"])
        .pipes(PipeConfig {
            batch_size: 10,
            capacity: 2,
        })
        .checkpoints(Checkpoints::off())
        .build()
        .expect("flow")
}

// ---- the child ----

fn child(dir: PathBuf) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.join("journal.sqlite"))
            .register(flow())
            .expect("register")
            .start()
            .await
            .expect("start runtime");
        let run = runtime
            .start_with("metered", RunOptions::new().id(RUN_KEY))
            .await
            .expect("start run");
        say(&format!("run {}", run.run_id()));
        if std::env::var_os(APPROVE_ENV).is_some() {
            let meter = run.stage_events::<Approve>("meter").await.expect("events");
            meter.send(Approve).await.expect("approve");
            let outcome = run.wait().await.expect("outcome");
            say(&format!("outcome {}", outcome.status.as_str()));
            runtime.shutdown().await;
            return;
        }
        // Killed from outside; never ends by itself.
        std::future::pending::<()>().await;
    });
}

// ---- the parent ----

fn spawn(dir: &Path, round: usize, env: Option<(&'static str, String)>) -> Running {
    let exe = std::env::current_exe().expect("current exe");
    let mut vars = vec![(CHILD_ENV, dir.as_os_str().to_owned())];
    vars.extend(env.map(|(k, v)| (k, v.into())));
    Running::spawn(&exe, &vars, round, Duration::from_secs(60))
}

/// The machine's last journaled state and context, as a child says them
/// (`"Low 0 0"` before any was journaled), and how many were journaled.
fn journaled(rt: &tokio::runtime::Runtime, dir: &Path, run_id: &str) -> (String, usize) {
    rt.block_on(async {
        let store = SqliteStore::open_read_only(dir.join("journal.sqlite"))
            .await
            .expect("open");
        let run_id = run_id.parse().expect("uuid");
        let mut memos = store.list_memos(run_id, "meter").await.expect("memos");
        memos.retain(|m| m.name.starts_with("@machine/"));
        memos.sort_by(|a, b| a.name.cmp(&b.name));
        let Some(last) = memos.last() else {
            return ("Low 0 0".to_owned(), 0);
        };
        let value = last.result.clone().expect("a journaled state");
        let said = format!(
            "{} {} {}",
            value["state"].as_str().expect("state"),
            value["context"]["seen"],
            value["context"]["flips"]
        );
        (said, memos.len())
    })
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let mut run_id: Option<String> = None;
    let mut expected = "Low 0 0".to_owned();
    let mut resumed_states = Vec::new();
    let pauses = PAUSES.iter().map(|p| Some((PAUSE_ENV, p.to_string())));
    let waits = std::iter::repeat_n(None, WAIT_ROUNDS);
    for (round, env) in pauses.chain(waits).enumerate() {
        let mid_stream = env.is_some();
        let mut child = spawn(dir.path(), round, env);
        let id = child.expect("run ");
        assert_eq!(*run_id.get_or_insert_with(|| id.clone()), id, "one run");
        let resumed = child.expect("resumed ");
        assert_eq!(
            resumed, expected,
            "round {round}: resumed in its journaled state"
        );
        resumed_states.push(resumed);
        if mid_stream {
            child.expect("paused ");
        } else {
            child.expect_all(&["waiting"]);
        }
        child.kill();
        let (state, count) = journaled(&rt, dir.path(), &id);
        if !mid_stream {
            assert!(state.starts_with("Waiting "), "round {round}: {state}");
        }
        println!(
            "round {round}: resumed {expected}, killed with {state} journaled ({count} writes)"
        );
        expected = state;
    }
    let run_id = run_id.expect("run id");
    let (waiting, writes) = journaled(&rt, dir.path(), &run_id);
    let mut last = spawn(
        dir.path(),
        PAUSES.len() + WAIT_ROUNDS,
        Some((APPROVE_ENV, "1".into())),
    );
    assert_eq!(last.expect("run "), run_id);
    assert_eq!(
        last.expect("resumed "),
        waiting,
        "the last child resumed the wait"
    );
    assert_eq!(last.expect("outcome "), "finished");
    last.process.wait().expect("reap");
    // The mid-wait rounds resumed the wait as journaled: nothing new was
    // journaled until the approval.
    assert!(
        resumed_states[PAUSES.len() + 1..]
            .iter()
            .all(|s| *s == waiting),
        "{resumed_states:?}"
    );

    rt.block_on(async {
        let store = SqliteStore::open_read_only(dir.path().join("journal.sqlite"))
            .await
            .expect("open");
        let id = run_id.parse().expect("uuid");
        let record = store.get_run(id).await.expect("get").expect("run");
        assert_eq!(record.status, RunStatus::Finished);
        let log = store.replay(id).await.expect("replay");
        let output = completed_output(&log);
        let result = &output["steps"]["meter"]["result"];
        assert_eq!(result["state"], "Done", "{output}");
        let seen = waiting.split(' ').nth(1).expect("seen");
        assert_eq!(result["output"]["seen"].to_string(), seen, "{output}");
        let memos = store.list_memos(id, "meter").await.expect("memos");
        assert_eq!(memos.len(), writes + 1, "Done was journaled once more");
    });
    println!(
        "runtime_crash_machine: {} kills ({} mid-stream, {WAIT_ROUNDS} mid-wait), each resumed in its journaled state",
        PAUSES.len() + WAIT_ROUNDS,
        PAUSES.len()
    );
}
