//! Journals made by real runs for the CLI tests, and a way to run the
//! real `troupe` binary on them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tokio::sync::mpsc;
use troupe::flow::{DeadLetterPolicy, FlowDefinition, RetryPolicy};
use troupe::records::StoreError;
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, PermanentError, Produced, Source, Transform, sink_fn};
use troupe::store::SqliteStore;
use troupe::supervise::BoxError;
use uuid::Uuid;

/// The item the `check` stage always refuses (permanently: dead-lettered).
pub const POISON: u64 = 3;

/// What the stages report to the test.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// `check` got a signal.
    Signal(String, Value),
    /// `sink` got an item.
    Item(u64),
    /// `check` refused an item.
    Refused(u64),
}

/// Emits 0..5, then ends (`batch`) or waits forever (`stream`).
struct Numbers {
    next: u64,
    endless: bool,
}

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.next == 5 {
            if self.endless {
                // Cancel-safe: a drain or a cancel drops this wait.
                std::future::pending::<()>().await;
            }
            return Ok(Produced::Done);
        }
        out.push(self.next);
        self.next += 1;
        Ok(Produced::More)
    }
}

/// Passes items on but [`POISON`]; reports signals.
struct Check(mpsc::UnboundedSender<Seen>);

impl Transform<u64> for Check {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if x == POISON {
            let _ = self.0.send(Seen::Refused(x));
            return Err(PermanentError::new(format!("item {x} is poisoned")).into());
        }
        out.push(x);
        Ok(())
    }

    fn on_signal(&mut self, name: &str, payload: &Value) {
        let _ = self.0.send(Seen::Signal(name.to_owned(), payload.clone()));
    }
}

/// `numbers → check → sink`, named `batch` (numbers end) or `stream`
/// (numbers wait forever after 5 items); dead letters do not fail the run.
pub fn flow(name: &str, seen: mpsc::UnboundedSender<Seen>) -> FlowDefinition<u64> {
    let endless = name == "stream";
    let to_check = seen.clone();
    FlowDefinition::<u64>::builder(name)
        .source("numbers", move |_| Numbers { next: 0, endless })
        .transform("check", move |_| Check(to_check.clone()))
        .sink("sink", move |_| {
            let seen = seen.clone();
            sink_fn(move |x: u64| {
                let _ = seen.send(Seen::Item(x));
                Ok(())
            })
        })
        .pipeline(["numbers", "check", "sink"])
        .default_retry(RetryPolicy::attempts(1))
        .serde_items()
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()
        .unwrap()
}

/// A journal with a finished `batch` run and a `stream` run left `Running`
/// by a runtime dropped mid-way (as a crashed process leaves it).
pub struct Journal {
    /// Keeps the directory.
    pub _dir: tempfile::TempDir,
    /// The journal file.
    pub path: PathBuf,
    /// The finished run.
    #[allow(dead_code)] // Not every test binary reads it.
    pub finished: Uuid,
    /// The unfinished run.
    #[allow(dead_code)] // Not every test binary reads it.
    pub unfinished: Uuid,
}

/// Makes a [`Journal`].
pub async fn journal() -> Journal {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.sqlite");
    // One channel per flow: what the finished run saw is not mistaken for
    // the other's progress.
    let (batch, _) = mpsc::unbounded_channel();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let runtime = Runtime::builder()
        .sqlite(&path)
        .register(flow("batch", batch))
        .unwrap()
        .register(flow("stream", tx))
        .unwrap()
        .start()
        .await
        .unwrap();
    let finished = runtime.start("batch").await.unwrap();
    finished.wait().await.unwrap();
    let unfinished = runtime.start("stream").await.unwrap();
    // The last item past the poison reached the sink: the run is mid-way,
    // waiting on its source, and its dead letter is durable (`check` goes
    // on only once it is).
    while rx.recv().await != Some(Seen::Item(4)) {}
    let (finished, unfinished) = (finished.run_id(), unfinished.run_id());
    drop(runtime);
    wait_released(&path).await;
    Journal {
        _dir: dir,
        path,
        finished,
        unfinished,
    }
}

/// Waits until a dropped runtime's writer thread has released the journal
/// (it does so right after the writes queued before the drop): retries a
/// writable open, yielding between tries, a bounded number of times.
pub async fn wait_released(path: &Path) {
    for _ in 0..100_000 {
        match SqliteStore::open(path).await {
            // Dropping a store releases the journal before the drop returns.
            Ok(store) => return drop(store),
            Err(StoreError::JournalLocked { .. }) => tokio::task::yield_now().await,
            Err(error) => panic!("reopening the journal: {error}"),
        }
    }
    panic!("the dropped runtime never released the journal");
}

/// Runs `troupe --journal PATH ARGS...`.
pub fn troupe(path: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_troupe"))
        .arg("--journal")
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

/// Runs `troupe`, expecting success; its stdout.
pub fn ok(path: &Path, args: &[&str]) -> String {
    let out = troupe(path, args);
    assert!(
        out.status.success(),
        "troupe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `troupe ... --json`, expecting success; its JSON.
pub fn json(path: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&ok(path, &args)).unwrap()
}
