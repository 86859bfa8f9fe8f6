//! One owner per journal, in one process: a second store opened for writing
//! on the same file, or a second runtime, gets a typed error while the first
//! lives, and opens at once after it is dropped; read-only opens for tools
//! never create, migrate or write, and work beside the owner; on unix the
//! journal's directory and files are private to their owner.
//! (`journal_owner.rs` checks the lock across processes.)

#[path = "support/raw_sqlite.rs"]
mod raw_sqlite;

use std::path::Path;
use std::sync::Arc;

use raw_sqlite::{run_sql, user_version};
use serde_json::json;
use troupe::flow::FlowDefinition;
use troupe::records::{EventKind, NewEvent, Run, RunStatus, StoreError, WriteOp};
use troupe::runtime::{Runtime, RuntimeError};
use troupe::stage::{sink_fn, source_iter};
use troupe::store::{SCHEMA_VERSION, SqliteStore, Store};

const DB: &str = "journal.sqlite";

fn small(name: &str) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder(name)
        .source("numbers", |_| source_iter(0..10_u64))
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "discard"])
        .build()
        .expect("valid flow")
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_file_is_refused_while_the_first_lives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let first = SqliteStore::open(&path).await.expect("first open");
    let run = Run::new("c", "g", "o");
    first.insert_run(run.clone(), None).await.expect("write");

    let second = SqliteStore::open(&path).await;
    let Err(StoreError::JournalLocked {
        path: locked,
        lock_file,
        holder,
    }) = second
    else {
        panic!("a second writer opened the journal: {:?}", second.err());
    };
    assert_eq!(locked, path);
    assert_eq!(lock_file, dir.path().join("journal.sqlite.lock"));
    #[cfg(unix)]
    assert_eq!(holder.map(|h| h.pid), Some(std::process::id()));
    #[cfg(not(unix))]
    let _ = holder;
    // The refused open changed nothing for the owner.
    first
        .append(NewEvent::new(run.id, EventKind::custom("still", json!(1))))
        .await
        .expect("the owner still writes");

    // Dropping the owner releases the journal before the drop returns.
    drop(first);
    for _ in 0..20 {
        let store = SqliteStore::open(&path).await.expect("reopen");
        drop(store);
    }
    let store = SqliteStore::open(&path)
        .await
        .expect("open after the owner");
    assert_eq!(store.list_events(run.id, 10).await.expect("read").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_store_releases_the_journal_while_handles_live_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let store = Arc::new(SqliteStore::open(&path).await.expect("open"));
    let run = Run::new("c", "g", "o");
    store.insert_run(run.clone(), None).await.expect("insert");
    let kept: Arc<dyn Store> = store.clone();
    store.close().await;
    store.close().await;

    let next = SqliteStore::open(&path).await.expect("the next owner");
    let late = kept.insert_run(Run::new("c", "g", "o"), None).await;
    assert!(
        matches!(&late, Err(StoreError::Closed { path: p }) if *p == path),
        "{late:?}"
    );
    // Reads still work, and see the next owner's writes.
    next.append(NewEvent::new(run.id, EventKind::custom("next", json!(1))))
        .await
        .expect("the next owner writes");
    assert_eq!(kept.replay(run.id).await.expect("replay").len(), 1);
    drop(kept);
    drop(store);
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(StoreError::JournalLocked { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runtime_on_the_same_journal_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let first = Runtime::builder()
        .sqlite(&path)
        .register(small("small"))
        .expect("register")
        .start()
        .await
        .expect("first runtime");

    let second = Runtime::builder()
        .sqlite(&path)
        .register(small("small"))
        .expect("register")
        .start()
        .await;
    let Err(error) = second else {
        panic!("a second runtime started on the journal");
    };
    let RuntimeError::JournalLocked { path: locked, .. } = &error else {
        panic!("expected JournalLocked, got {error:?}");
    };
    assert_eq!(locked, &path);
    let message = error.to_string();
    assert!(message.contains("stop that runtime"), "{message}");
    assert!(message.contains("open_read_only"), "{message}");

    // A store opened for writing is refused too; the owner is unharmed.
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(StoreError::JournalLocked { .. })
    ));
    let handle = first.start("small").await.expect("start");
    let outcome = handle.wait().await.expect("outcome");
    assert_eq!(outcome.status, RunStatus::Finished);
    // Handles that outlive the runtime do not keep the journal from the next one.
    let journal = first.journal().clone();
    first.shutdown().await;

    let again = Runtime::builder()
        .sqlite(&path)
        .start()
        .await
        .expect("the journal is free after shutdown");
    let stored = again.journal().get_run(outcome.run_id).await.expect("read");
    assert_eq!(stored.map(|r| r.status), Some(RunStatus::Finished));
    // The old handles read on; the old journal refuses writes.
    assert_eq!(handle.run_id(), outcome.run_id);
    let old = journal.get_run(outcome.run_id).await.expect("old read");
    assert_eq!(old.map(|r| r.status), Some(RunStatus::Finished));
    assert!(
        journal
            .insert_run(Run::new("c", "g", "o"), None)
            .await
            .is_err()
    );
    again.shutdown().await;
}

#[tokio::test]
async fn in_memory_stores_take_no_lock() {
    let a = SqliteStore::open(":memory:").await.expect("a");
    let b = SqliteStore::open(":memory:").await.expect("b");
    let run = Run::new("c", "g", "o");
    a.insert_run(run.clone(), None).await.expect("write a");
    b.insert_run(run, None).await.expect("write b");
    assert!(!Path::new(":memory:.lock").exists());
}

#[tokio::test]
async fn a_read_only_open_of_a_missing_journal_errors_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in [
        dir.path().join(DB),
        dir.path().join("nested").join(DB),
        ":memory:".into(),
    ] {
        let opened = SqliteStore::open_read_only(&path).await;
        let Err(StoreError::NotFound { path: missing }) = opened else {
            panic!("{}: {:?}", path.display(), opened.map(|_| "opened"));
        };
        assert_eq!(missing, path);
    }
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_beside_a_live_writer_sees_what_it_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let writer = SqliteStore::open(&path).await.expect("writer");
    let run = Run::new("c", "g", "o");
    writer.insert_run(run.clone(), None).await.expect("insert");

    let reader = SqliteStore::open_read_only(&path)
        .await
        .expect("read-only beside the writer");
    assert!(reader.is_read_only() && !writer.is_read_only());
    assert_eq!(
        reader.get_run(run.id).await.expect("read").map(|r| r.id),
        Some(run.id)
    );
    // Later commits are visible too.
    writer
        .append(NewEvent::new(run.id, EventKind::custom("later", json!(2))))
        .await
        .expect("append");
    let events = reader.list_events(run.id, 10).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        reader.latest_cursor().await.expect("cursor"),
        events[0].cursor
    );
    // Two readers at once, and a writer still refused beside them.
    let other = SqliteStore::open_read_only(&path)
        .await
        .expect("a second reader");
    assert_eq!(other.replay(run.id).await.expect("replay").len(), 1);
    assert!(matches!(
        SqliteStore::open(&path).await,
        Err(StoreError::JournalLocked { .. })
    ));
    drop(writer);
    // The readers did not take the writer's place.
    let writer = SqliteStore::open(&path)
        .await
        .expect("a writer after the first");
    drop(writer);
    assert_eq!(reader.replay(run.id).await.expect("replay").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_refuses_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let run = Run::new("c", "g", "o");
    {
        let writer = SqliteStore::open(&path).await.expect("writer");
        writer.insert_run(run.clone(), None).await.expect("insert");
    }
    let reader = SqliteStore::open_read_only(&path).await.expect("reader");

    let refused = reader.insert_run(Run::new("c", "g", "o"), None).await;
    assert!(
        matches!(&refused, Err(StoreError::ReadOnly { op: "insert_run", path: p }) if *p == path),
        "{refused:?}"
    );
    let append = NewEvent::new(run.id, EventKind::custom("x", json!(null)));
    assert!(matches!(
        reader.append(append.clone()).await,
        Err(StoreError::ReadOnly { op: "append", .. })
    ));
    let results = reader
        .apply_batch(vec![
            WriteOp::Append(append),
            WriteOp::InsertRun {
                run: Box::new(Run::new("c", "g", "o")),
                audit: None,
            },
        ])
        .await
        .expect("the batch is answered op by op");
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(StoreError::ReadOnly { .. })))
    );
    assert!(reader.run_on_writer(Box::new(|_| {})).is_err());

    drop(reader);
    let writer = SqliteStore::open(&path).await.expect("reopen");
    assert!(writer.replay(run.id).await.expect("replay").is_empty());
    assert_eq!(
        writer
            .list_runs_by_status(RunStatus::Created)
            .await
            .expect("runs")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_read_only_open_never_migrates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v3.sqlite");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/journal-v3.sqlite"
        ),
        &path,
    )
    .expect("copy fixture");
    let before = std::fs::read(&path).expect("read");
    let opened = SqliteStore::open_read_only(&path).await;
    let Err(error @ StoreError::SchemaTooOld { found: 3, .. }) = opened else {
        panic!("expected SchemaTooOld, got {:?}", opened.map(|_| "opened"));
    };
    assert!(
        error.to_string().contains("open it once for writing"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the file changed"
    );

    // Migrated by a writer, it opens read-only; a newer one is refused.
    drop(SqliteStore::open(&path).await.expect("migrate"));
    drop(
        SqliteStore::open_read_only(&path)
            .await
            .expect("current schema"),
    );
    run_sql(
        &path,
        &format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1),
    );
    assert!(matches!(
        SqliteStore::open_read_only(&path).await,
        Err(StoreError::SchemaTooNew { .. })
    ));
    assert_eq!(user_version(&path), SCHEMA_VERSION + 1);
}

/// A runtime's journal can be read by a tool while the runtime runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_reads_a_running_runtimes_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(DB);
    let runtime = Runtime::builder()
        .sqlite(&path)
        .register(small("small"))
        .expect("register")
        .start()
        .await
        .expect("runtime");
    let outcome = runtime
        .start("small")
        .await
        .expect("start")
        .wait()
        .await
        .expect("outcome");
    let reader = Arc::new(SqliteStore::open_read_only(&path).await.expect("reader"));
    let stored = reader.get_run(outcome.run_id).await.expect("read");
    assert_eq!(stored.map(|r| r.status), Some(RunStatus::Finished));
    assert!(
        reader
            .terminal_event(outcome.run_id)
            .await
            .expect("read")
            .is_some()
    );
    runtime.shutdown().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_creates_its_journal_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let outer = dir.path().join("data");
    let journal_dir = outer.join("journals");
    let path = journal_dir.join(DB);
    let runtime = Runtime::builder()
        .sqlite(&path)
        .register(small("small"))
        .expect("register")
        .start()
        .await
        .expect("runtime");
    runtime
        .start("small")
        .await
        .expect("start")
        .wait()
        .await
        .expect("outcome");
    assert_eq!(mode(&outer), 0o700);
    assert_eq!(mode(&journal_dir), 0o700);
    for name in [
        DB,
        "journal.sqlite-wal",
        "journal.sqlite-shm",
        "journal.sqlite.lock",
    ] {
        assert_eq!(mode(&journal_dir.join(name)), 0o600, "{name}");
    }
    runtime.shutdown().await;

    // A journal that exists keeps the modes its owner gave it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(mode(&path), 0o640);
    drop(store);
}
