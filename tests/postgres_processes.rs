//! Three runtime processes share one PostgreSQL journal and 1,000 runs of a
//! checkpointing flow of 300 items each (each process starts a third). Once the second
//! process reports its runs are well under way, it is SIGKILLed. Checked:
//! - every run finishes, with exactly one terminal event;
//! - the killed process's runs are taken over by the others within the
//!   lease plus one renewal period (and some slack for a loaded machine);
//! - a trigger logs, for every event committed, the worker whose writer
//!   committed it and the run's lease holder at that moment (its row is
//!   locked by the write's fence): no write was committed by a worker that
//!   did not hold the run's lease.
//!
//! One binary plays both roles (`harness = false`): with
//! `TROUPE_PROCESSES_CHILD` set it is a child.

#[path = "support/child.rs"]
mod child;
#[path = "support/postgres.rs"]
mod postgres;

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use child::{Running, say};
use serde_json::{Value, json};
use troupe::checkpoint::Checkpoints;
use troupe::flow::{FlowDefinition, RunOptions};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, Produced, Source, sink_fn};
use troupe::store::PostgresConfig;
use troupe::supervise::BoxError;

const CHILD_ENV: &str = "TROUPE_PROCESSES_CHILD";
const URL_ENV: &str = "TROUPE_PROCESSES_URL";
const SCHEMA_ENV: &str = "TROUPE_PROCESSES_SCHEMA";
const PROCESSES: usize = 3;
const RUNS: usize = 1_000;
const ITEMS: u64 = 300;
const LEASE: Duration = Duration::from_secs(1);
/// Items a child's sinks take before it says `under way`.
const UNDER_WAY: u64 = 30_000;

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(index) => child(index.parse().expect("child index")),
        Err(_) => parent(),
    }
}

// ---- the child ----

/// Numbers, ten at a time, a few milliseconds apart, with a position.
struct Paced {
    next: u64,
}

impl Source<u64> for Paced {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let stop = (self.next + 10).min(ITEMS);
        out.extend(self.next..stop);
        self.next = stop;
        Ok(if stop == ITEMS {
            Produced::Done
        } else {
            Produced::More
        })
    }

    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(Some(json!(self.next)))
    }

    fn restore(&mut self, position: Value) -> Result<(), BoxError> {
        self.next = serde_json::from_value(position)?;
        Ok(())
    }
}

fn flow(taken: Arc<AtomicU64>) -> FlowDefinition<u64> {
    FlowDefinition::<u64>::builder("work")
        .source("numbers", |_| Paced { next: 0 })
        .sink("count", move |_| {
            let taken = taken.clone();
            sink_fn(move |_: u64| {
                if taken.fetch_add(1, Ordering::Relaxed) + 1 == UNDER_WAY {
                    say("under way");
                }
                Ok(())
            })
        })
        .pipeline(["numbers", "count"])
        .checkpoints(Checkpoints::every(Duration::from_millis(100)))
        .build()
        .expect("flow")
}

fn child(index: usize) {
    let url = std::env::var(URL_ENV).expect("url");
    let schema = std::env::var(SCHEMA_ENV).expect("schema");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let config = PostgresConfig {
            schema: Some(schema),
            worker: Some(format!("w{index}")),
            lease: LEASE,
            ..PostgresConfig::default()
        };
        let runtime = Runtime::builder()
            .postgres_with(url, config)
            .register(flow(Arc::default()))
            .expect("register")
            .start()
            .await
            .expect("start runtime");
        // Started all at once: their records share the journal's commits.
        let runtime = Arc::new(runtime);
        let mut starts = tokio::task::JoinSet::new();
        for _ in (index..RUNS).step_by(PROCESSES) {
            let runtime = runtime.clone();
            starts.spawn(async move { runtime.start_with("work", RunOptions::new()).await });
        }
        while let Some(started) = starts.join_next().await {
            started.expect("join").expect("start run");
        }
        let runtime = Arc::into_inner(runtime).expect("the only handle");
        say("started");
        // Until the parent says so (or kills it); then a clean shutdown.
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        });
        let _ = stdin.await;
        runtime.shutdown().await;
        say("stopped");
    });
}

// ---- the parent ----

/// Logs every event committed: the worker whose writer committed it (its
/// connection's `application_name`) and the run's lease at that moment.
const WRITE_LOG: &str = "
CREATE TABLE write_log (run_id uuid, writer text, owner text, epoch bigint);
CREATE FUNCTION log_write() RETURNS trigger AS $$
BEGIN
  INSERT INTO write_log
    SELECT NEW.run_id, current_setting('application_name'), r.lease_owner, r.lease_epoch
    FROM runs r WHERE r.id = NEW.run_id;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER log_write AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION log_write();
";

fn parent() {
    let Some(url) = postgres::url() else { return };
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let schema = postgres::Schema::new(&url);
    let db = rt.block_on(async {
        // The tables first (a store creates them), then the write log.
        drop(schema.store().await);
        let db = schema.client().await;
        db.batch_execute(&format!("SET search_path TO \"{}\"", schema.name))
            .await
            .expect("search path");
        db.batch_execute(WRITE_LOG).await.expect("write log");
        db
    });
    let exe = std::env::current_exe().expect("current exe");
    let mut children: Vec<Running> = (0..PROCESSES)
        .map(|index| {
            let env = [
                (CHILD_ENV, index.to_string().into()),
                (URL_ENV, url.clone().into()),
                (SCHEMA_ENV, schema.name.clone().into()),
            ];
            Running::spawn(&exe, &env, index, Duration::from_secs(120))
        })
        .collect();
    for child in &mut children {
        child.expect_all(&["started"]);
    }
    let mut victim = children.remove(1);
    victim.expect_all(&["under way"]);
    victim.kill();
    let killed = Instant::now();

    let count = |sql: &str| -> i64 {
        rt.block_on(async { db.query_one(sql, &[]).await.expect(sql).get(0) })
    };
    // Measured, not synchronized on: the kill point was the child's report.
    let taken_over = loop {
        let left =
            count("SELECT count(*) FROM runs WHERE lease_owner = 'w1' AND status NOT IN (3, 4, 5)");
        if left == 0 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "{left} runs of w1 never taken over"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    loop {
        let ended = count("SELECT count(*) FROM runs WHERE status IN (3, 4, 5)");
        if ended == RUNS as i64 {
            break;
        }
        if killed.elapsed() > Duration::from_secs(120) {
            panic!("only {ended} runs ended: {}", diagnose(&rt, &db));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for child in &mut children {
        child.say("stop");
        child.expect_all(&["stopped"]);
    }
    for mut child in children {
        child.process.wait().expect("reap");
    }

    let finished = count("SELECT count(*) FROM runs WHERE status = 3");
    assert_eq!(
        finished,
        RUNS as i64,
        "every run finished: {}",
        diagnose(&rt, &db)
    );
    let terminals = count(
        "SELECT count(*) FROM events WHERE kind IN ('RunCompleted', 'RunFailed', 'RunCancelled')",
    );
    let with_one = count(
        "SELECT count(*) FROM (SELECT run_id FROM events \
         WHERE kind IN ('RunCompleted', 'RunFailed', 'RunCancelled') \
         GROUP BY run_id HAVING count(*) = 1) t",
    );
    assert_eq!(
        (terminals, with_one),
        (RUNS as i64, RUNS as i64),
        "one terminal event per run"
    );
    let moved = count("SELECT count(DISTINCT id) FROM runs WHERE lease_epoch > 1");
    assert!(moved > 0, "the killed process's unfinished runs moved");
    let writes = count("SELECT count(*) FROM write_log");
    let stale = count("SELECT count(*) FROM write_log WHERE writer <> 'troupe-writer ' || owner");
    assert!(writes > RUNS as i64);
    assert_eq!(
        stale, 0,
        "a write was committed by a worker without the run's lease"
    );
    let bound = LEASE + LEASE / 3 + Duration::from_secs(5);
    assert!(
        taken_over <= bound,
        "taken over in {taken_over:?} (bound {bound:?})"
    );
    println!(
        "postgres_processes: {PROCESSES} processes, {RUNS} runs, one killed: {moved} runs moved, \
         taken over {taken_over:.2?} after the kill (lease {LEASE:?}), {writes} writes logged, \
         none by a worker without the lease"
    );
}

/// What the runs that did not finish look like, for a failure's message.
fn diagnose(rt: &tokio::runtime::Runtime, db: &tokio_postgres::Client) -> String {
    rt.block_on(async {
        let mut out = String::new();
        let queries = [
            "SELECT status::text || ' owner ' || coalesce(lease_owner, '-') || ' epoch ' \
             || coalesce(lease_epoch::text, '-') || ': ' || count(*) FROM runs \
             GROUP BY status, lease_owner, lease_epoch ORDER BY 1",
            "SELECT r.id::text || ' ' || r.status::text || ' ' || coalesce(f.reason, '') \
             FROM runs r LEFT JOIN failures f ON f.run_id = r.id WHERE r.status <> 3 LIMIT 8",
            "SELECT e.run_id::text || ' ' || e.kind || ' ' || \
             coalesce(convert_from(e.payload, 'UTF8'), '') FROM events e \
             JOIN runs r ON r.id = e.run_id WHERE r.status <> 3 ORDER BY e.cursor DESC LIMIT 12",
            // Why runs failed, each reason once (run ids blanked out).
            "SELECT count(*) || ' x ' || reason FROM (SELECT regexp_replace(\
             coalesce(convert_from(payload, 'UTF8'), ''), \
             '[0-9a-f]{8}-[0-9a-f-]{27}', '<id>', 'g') AS reason \
             FROM events WHERE kind = 'RunFailed') t GROUP BY reason ORDER BY count(*) DESC LIMIT 5",
        ];
        for sql in queries {
            match db.query(sql, &[]).await {
                Ok(rows) => {
                    for row in rows {
                        out.push_str(&format!("\n  {}", row.get::<_, String>(0)));
                    }
                }
                Err(e) => out.push_str(&format!("\n  ({sql}: {e})")),
            }
        }
        out
    })
}
