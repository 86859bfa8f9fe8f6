//! One owner per journal, across processes: a child process starts a
//! runtime on an SQLite journal and a run that never ends, and reports
//! `locked <run id>`. While it lives, a runtime (or a store opened for
//! writing) in the parent is refused with a typed error naming the child,
//! so the child's run is not resumed a second time; a read-only open works
//! beside it. Then the parent kills the child with SIGKILL: the lock died
//! with it, and a new runtime opens the journal and resumes the run.
//!
//! The parent synchronizes on the lines the child prints, never on the
//! clock. One binary plays both roles (`harness = false`): with
//! `TROUPE_OWNER_CHILD` set it is the child.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use troupe::flow::FlowDefinition;
use troupe::records::{RunStatus, StoreError};
use troupe::runtime::{Runtime, RuntimeError};
use troupe::stage::{Emitter, Produced, Source, sink_fn, source_iter};
use troupe::store::{SqliteStore, Store};
use troupe::supervise::BoxError;
use uuid::Uuid;

const CHILD_ENV: &str = "TROUPE_OWNER_CHILD";
const FLOW: &str = "held";
const DB: &str = "journal.sqlite";

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => child(&PathBuf::from(dir)),
        None => parent(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

// ---- the child ----

/// A source that never produces: the child's run stays unfinished.
struct Forever;

impl Source<u64> for Forever {
    async fn produce(&mut self, _out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        std::future::pending().await
    }
}

fn held_forever() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder(FLOW)
        .source("numbers", |_| Forever)
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .expect("valid flow")
}

/// Owns the journal with a run in flight, says so, and waits; the parent
/// gone (stdin closed) ends it, so no child outlives a failed parent.
fn child(dir: &Path) {
    let rt = runtime();
    let _runtime = rt.block_on(async {
        let runtime = Runtime::builder()
            .sqlite(dir.join(DB))
            .register(held_forever())
            .expect("register")
            .start()
            .await
            .expect("child start");
        let run = runtime.start(FLOW).await.expect("start run");
        println!("locked {}", run.run_id());
        runtime
    });
    let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
    std::process::exit(3);
}

// ---- the parent ----

/// Bounds a failing child only: nothing waits on it when all goes well.
const LINE_LIMIT: Duration = Duration::from_secs(60);

fn finishing() -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder(FLOW)
        .source("numbers", |_| source_iter(0..10_u64))
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .expect("valid flow")
}

fn parent() {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(300));
        eprintln!("journal_owner: timed out");
        std::process::exit(1);
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let line = lines
        .recv_timeout(LINE_LIMIT)
        .expect("the child reports that it owns the journal");
    let run_id = line
        .strip_prefix("locked ")
        .and_then(|id| Uuid::parse_str(id).ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));

    let rt = runtime();
    rt.block_on(async {
        // A second runtime is refused, naming the child; it resumed nothing.
        let second = Runtime::builder()
            .sqlite(&path)
            .register(finishing())
            .expect("register")
            .start()
            .await;
        let Err(error) = second else {
            panic!("a second runtime started beside the child's");
        };
        let RuntimeError::JournalLocked {
            path: locked,
            holder,
        } = &error
        else {
            panic!("expected JournalLocked, got {error:?}");
        };
        assert_eq!(locked, &path);
        #[cfg(unix)]
        assert_eq!(holder.as_ref().map(|h| h.pid), Some(child.id()), "{error}");
        #[cfg(not(unix))]
        let _ = holder;
        assert!(matches!(
            SqliteStore::open(&path).await,
            Err(StoreError::JournalLocked { .. })
        ));

        // A tool reads beside the owner and sees its run in flight.
        let reader = SqliteStore::open_read_only(&path).await.expect("read-only");
        let run = reader
            .get_run(run_id)
            .await
            .expect("read")
            .expect("the run");
        assert!(!run.status.is_terminal(), "{:?}", run.status);
    });

    child.kill().expect("SIGKILL child");
    child.wait().expect("reap child");

    rt.block_on(async {
        // The lock died with the child: the journal is ours, and so is its run.
        let runtime = Runtime::builder()
            .sqlite(&path)
            .register(finishing())
            .expect("register")
            .start()
            .await
            .expect("a runtime after the owner died");
        let resumed = runtime
            .resumed()
            .iter()
            .find(|r| r.run_id() == run_id)
            .cloned()
            .expect("the child's run is resumed");
        let outcome = resumed.wait().await.expect("outcome");
        assert_eq!(outcome.status, RunStatus::Finished);
        runtime.shutdown().await;
    });
    println!(
        "journal_owner: a live owner refused a second runtime; its death released the journal"
    );
}
