//! The PostgreSQL store against what it must refuse or survive: an
//! unreachable server, a schema newer than this build, a connection killed
//! mid-batch and mid-commit (never a false acknowledgement), and values
//! PostgreSQL cannot store as text.

#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use troupe::records::{EventKind, FailureEntry, NewEvent, Run, StoreError, WriteOp, WriteOutcome};
use troupe::store::{POSTGRES_SCHEMA_VERSION, PostgresConfig, PostgresStore, Store};
use uuid::Uuid;

fn custom(name: &str, payload: Value) -> EventKind {
    EventKind::custom(name, payload)
}

fn append(run: Uuid, name: &str) -> WriteOp {
    WriteOp::Append(NewEvent::new(run, custom(name, Value::Null)))
}

async fn new_run(store: &PostgresStore) -> Run {
    let run = Run::new("ctrl", "goal", "o");
    store
        .insert_run(run.clone(), Some(custom("created", Value::Null)))
        .await
        .unwrap();
    run
}

async fn names(store: &PostgresStore, run: Uuid) -> Vec<String> {
    store
        .replay(run)
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name().to_owned())
        .collect()
}

/// Waits until the backend `pid` waits on a lock (so the write it is
/// running is stuck where the test wants it).
async fn until_waiting_on_lock(client: &tokio_postgres::Client, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = client
            .query_opt(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        let waiting: Option<String> = row.and_then(|r| r.get(0));
        if waiting.as_deref() == Some("Lock") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "backend {pid} never waited on a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn terminate(client: &tokio_postgres::Client, pid: i32) {
    let row = client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "backend {pid} terminated");
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error_within_the_timeout() {
    let started = Instant::now();
    let config = PostgresConfig {
        connect_timeout: Duration::from_secs(2),
        ..PostgresConfig::default()
    };
    // Nothing listens on port 1; 10.255.255.1 is not routed (or answers
    // nothing): either way the store gives up within its timeout.
    for url in [
        "host=127.0.0.1 port=1 user=troupe dbname=troupe",
        "host=10.255.255.1 port=5432 user=troupe dbname=troupe",
    ] {
        let err = PostgresStore::connect_with(url, config.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Postgres { op: "connect", .. }),
            "{url}: {err}"
        );
    }
    // A server that takes the connection and never answers: the timeout
    // ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let waited = Instant::now();
    let url = format!("host=127.0.0.1 port={port} user=troupe dbname=troupe");
    let err = PostgresStore::connect_with(&url, config.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Postgres { op: "connect", .. }),
        "{err}"
    );
    assert!(
        waited.elapsed() >= Duration::from_secs(2),
        "{:?}",
        waited.elapsed()
    );
    drop(silent);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = PostgresStore::connect("postgresql://[bad")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Postgres {
                op: "parse the connection URL",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = schema.store().await;
    let run = new_run(&store).await;
    drop(store);
    // Opening again is fine (nothing to migrate) and keeps what was stored.
    let store = schema.store().await;
    assert!(store.get_run(run.id).await.unwrap().is_some());
    drop(store);
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "UPDATE \"{}\".troupe_schema SET version = {}",
            schema.name,
            POSTGRES_SCHEMA_VERSION + 1
        ))
        .await
        .unwrap();
    let err = PostgresStore::connect_with(&schema.url, schema.config())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::PostgresSchemaTooNew { schema: s, found, supported }
            if *s == schema.name && *found == POSTGRES_SCHEMA_VERSION + 1
                && *supported == POSTGRES_SCHEMA_VERSION),
        "{err}"
    );
}

/// Runs a batch of two appends to a fresh run (`with_ids`: with event ids,
/// which take the general path, one request at a time; else plain appends,
/// sent with their `COMMIT` in one round trip) while a test transaction
/// holds the events table, terminates the writer's connection as it waits,
/// and returns the batch's error. Nothing of the batch is stored, and the
/// next batch reconnects and continues the run's sequence.
async fn killed_while_waiting(with_ids: bool) -> StoreError {
    let url = postgres::url().expect("checked by the caller");
    let schema = postgres::Schema::new(&url);
    let store = std::sync::Arc::new(schema.store().await);
    let run = new_run(&store).await;
    // Prepares the writer's statements, which would otherwise wait for the
    // table before anything of the batch is sent.
    store
        .apply_batch(vec![append(run.id, "warm")])
        .await
        .unwrap();
    let pid = store.writer_backend_pid().await.unwrap();

    let blocker = schema.client().await;
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{}\".events IN ACCESS EXCLUSIVE MODE",
            schema.name
        ))
        .await
        .unwrap();
    let ops = ["lost-1", "lost-2"]
        .map(|name| {
            let kind = custom(name, Value::Null);
            WriteOp::Append(match with_ids {
                true => NewEvent::with_id(run.id, name, kind),
                false => NewEvent::new(run.id, kind),
            })
        })
        .to_vec();
    let writer = store.clone();
    let batch = tokio::spawn(async move { writer.apply_batch(ops).await });
    let watcher = schema.client().await;
    until_waiting_on_lock(&watcher, pid).await;
    terminate(&watcher, pid).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();

    let err = batch.await.unwrap().unwrap_err();
    assert_eq!(names(&store, run.id).await, ["created", "warm"]);
    let next = store
        .apply_batch(vec![append(run.id, "after")])
        .await
        .unwrap();
    assert!(
        matches!(&next[..], [Ok(WriteOutcome::Appended(a))] if a.seq == 3),
        "{next:?}"
    );
    assert_ne!(store.writer_backend_pid().await.unwrap(), pid);
    assert_eq!(names(&store, run.id).await, ["created", "warm", "after"]);
    err
}

/// Killed before its `COMMIT` was sent: `ConnectionLost`, nothing stored.
#[tokio::test]
async fn a_connection_killed_mid_batch_fails_the_batch_and_the_next_reconnects() {
    if postgres::url().is_none() {
        return;
    }
    let err = killed_while_waiting(true).await;
    assert!(matches!(err, StoreError::ConnectionLost { .. }), "{err}");
}

/// Plain appends travel with their `COMMIT`: killed while the insert waits,
/// the commit's outcome is unknown to the store, so it says so.
#[tokio::test]
async fn plain_appends_killed_with_their_commit_in_flight_are_commit_unknown() {
    if postgres::url().is_none() {
        return;
    }
    let err = killed_while_waiting(false).await;
    assert!(
        matches!(err, StoreError::CommitUnknown { batch_len: 2, .. }),
        "{err}"
    );
}

/// The connection is terminated while `COMMIT` runs (held up by a deferred
/// constraint trigger that waits for a lock the test holds): the outcome is
/// unknown, so the batch is reported as `CommitUnknown`, never as done; the
/// next batch reconnects and continues the run's sequence from what the
/// database holds.
#[tokio::test]
async fn a_connection_killed_during_commit_is_commit_unknown() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = std::sync::Arc::new(schema.store().await);
    let run = new_run(&store).await;
    let pid = store.writer_backend_pid().await.unwrap();
    let key = (Uuid::now_v7().as_u128() as i64).abs();
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "CREATE FUNCTION \"{s}\".hold() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_advisory_xact_lock({key}); RETURN NULL; END $$; \
             CREATE CONSTRAINT TRIGGER hold AFTER INSERT ON \"{s}\".events \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION \"{s}\".hold(); \
             SELECT pg_advisory_lock({key})",
            s = schema.name
        ))
        .await
        .unwrap();
    let writer = store.clone();
    let batch =
        tokio::spawn(async move { writer.apply_batch(vec![append(run.id, "maybe")]).await });
    until_waiting_on_lock(&client, pid).await;
    terminate(&client, pid).await;
    let err = batch.await.unwrap().unwrap_err();
    assert!(
        matches!(err, StoreError::CommitUnknown { batch_len: 1, .. }),
        "{err}"
    );
    client
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock({key}); DROP TRIGGER hold ON \"{}\".events",
            schema.name
        ))
        .await
        .unwrap();
    let next = store
        .apply_batch(vec![append(run.id, "after")])
        .await
        .unwrap();
    let stored = names(&store, run.id).await;
    assert_eq!(
        stored.last().map(String::as_str),
        Some("after"),
        "{stored:?}"
    );
    assert!(
        matches!(&next[..], [Ok(WriteOutcome::Appended(a))] if a.seq == stored.len() as u64),
        "{next:?} {stored:?}"
    );
}

/// PostgreSQL text cannot hold NUL: each string column refuses it with a
/// typed error for that op alone, while JSON (stored as bytes) keeps NULs,
/// any key order and numbers at the edges of their ranges exactly.
#[tokio::test]
async fn nul_in_text_is_refused_per_op_and_json_keeps_everything() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = schema.store().await;
    let run = new_run(&store).await;
    let mut bad_run = Run::new("ctrl", "go\0al", "o");
    bad_run.current_step = Some("step".into());
    let failure = FailureEntry {
        run_id: run.id,
        step_id: "s".into(),
        reason: "bo\0om".into(),
        error_json: None,
        at: chrono::Utc::now(),
    };
    let odd = json!({
        "nul\u{0}key": "nul\u{0}value",
        "big": u64::MAX,
        "neg": i64::MIN,
        "float": 1.5e300,
        "unicode": "✓ \u{1F600}",
        "z": 1, "a": 2,
    });
    let ops = vec![
        WriteOp::Append(NewEvent::new(run.id, custom("bad\0kind", Value::Null))),
        WriteOp::Append(NewEvent::with_id(run.id, "id\0", custom("x", Value::Null))),
        WriteOp::InsertRun {
            run: Box::new(bad_run.clone()),
            audit: None,
        },
        WriteOp::RecordFailure(failure),
        WriteOp::SettleInbox {
            run_id: run.id,
            id: Uuid::now_v7(),
            stage: "st\0age".into(),
            undeliverable: None,
        },
        WriteOp::Append(NewEvent::new(run.id, custom("odd", odd.clone()))),
    ];
    let results = store.apply_batch(ops).await.unwrap();
    let fields: Vec<Option<&str>> = results
        .iter()
        .map(|r| match r {
            Err(StoreError::InvalidInput { field, .. }) => Some(*field),
            _ => None,
        })
        .collect();
    assert_eq!(
        fields,
        [
            Some("kind"),
            Some("event_id"),
            Some("goal"),
            Some("reason"),
            Some("stage"),
            None
        ],
        "{results:?}"
    );
    assert!(
        matches!(results[5], Ok(WriteOutcome::Appended(_))),
        "{results:?}"
    );
    assert!(store.get_run(bad_run.id).await.unwrap().is_none());
    assert!(store.list_failures(run.id).await.unwrap().is_empty());
    let events = store.replay(run.id).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, custom("odd", odd));
    // A run key may not hold control characters on any backend.
    let mut keyed = Run::new("ctrl", "goal", "o");
    keyed.key = Some("k\0".into());
    let err = store.insert_run(keyed, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidInput { field: "key", .. }),
        "{err}"
    );
}

/// Rows this build cannot read (damaged, or written by a newer version)
/// are typed errors naming the row: the recovery scan reports such a run
/// in its place and lists the others; a bad payload fails its read.
#[tokio::test]
async fn undecodable_rows_are_reported_where_they_are() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let store = schema.store().await;
    let damaged = new_run(&store).await;
    let fine = new_run(&store).await;
    store
        .append(NewEvent::new(fine.id, custom("note", json!({"n": 1}))))
        .await
        .unwrap();
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "UPDATE \"{s}\".runs SET status = 9 WHERE id = '{d}'; \
             UPDATE \"{s}\".events SET payload = '\\x7b7b'::bytea \
             WHERE run_id = '{f}' AND kind = 'note'",
            s = schema.name,
            d = damaged.id,
            f = fine.id
        ))
        .await
        .unwrap();
    let rows = store.list_runs_to_recover().await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    match &rows[0] {
        Err(d) => {
            assert_eq!((d.row.table, d.row.run_id), ("runs", Some(damaged.id)));
            assert!(
                matches!(&d.error, StoreError::CorruptRow { column: "status", value, .. } if value == "9"),
                "{d}"
            );
        }
        Ok(run) => panic!("a run with status 9 decoded: {run:?}"),
    }
    assert_eq!(rows[1].as_ref().map(|r| r.id).ok(), Some(fine.id));
    let err = store.replay(fine.id).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptPayload { row, column: "payload", .. }
            if row.table == "events" && row.run_id == Some(fine.id)),
        "{err}"
    );
}
