//! Several runtime processes sharing one PostgreSQL journal (issue 19), in
//! one run of this binary:
//! - `throughput`: `RUNS` runs of a 3-stage pipeline (`ITEMS` items each)
//!   started by 1 process, then the same runs spread over 3 processes (each
//!   starts a third, all at once): run starts/s (all starts done) and items/s
//!   (from the first start to the last run ended, as the journal says),
//!   3 processes against 1;
//! - `takeover`: 3 processes, each with a third of `PACED_RUNS` slow runs;
//!   one is SIGKILLed once its runs are started; the time from the kill
//!   until none of its unfinished runs is still its own (claimed by the
//!   others), with the default lease and with a 1 s one.
//!
//! Run: `TROUPE_TEST_POSTGRES_URL=... cargo bench --features postgres
//! --bench postgres_scale` (`.ci/postgres.sh start` prints a URL);
//! `-- --test` runs a short version.

#[path = "../tests/support/child.rs"]
mod child;

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use child::{Running, say};
use troupe::flow::{FlowDefinition, RunOptions};
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, Produced, Source, sink_fn, source_iter, transform_fn};
use troupe::store::{PostgresConfig, PostgresStore};
use troupe::supervise::BoxError;

const CHILD_ENV: &str = "TROUPE_BENCH_PROCESSES_CHILD";
const RUNS: usize = 300;
const ITEMS: u64 = 20_000;
const PACED_RUNS: usize = 300;

/// What a child is told by its environment.
struct Role {
    index: usize,
    processes: usize,
    runs: usize,
    paced: bool,
    lease: Duration,
    url: String,
    schema: String,
}

fn main() {
    if let Ok(role) = std::env::var(CHILD_ENV) {
        return child(parse(&role));
    }
    let quick = std::env::args().any(|a| a == "--test");
    let Ok(url) = std::env::var("TROUPE_TEST_POSTGRES_URL") else {
        eprintln!("postgres_scale: TROUPE_TEST_POSTGRES_URL not set; nothing measured");
        return;
    };
    let runs = if quick { 12 } else { RUNS };
    let paced = if quick { 12 } else { PACED_RUNS };
    println!("| case | processes | runs | starts/s | items/s | wall |");
    println!("|---|---|---|---|---|---|");
    let one = throughput(&url, 1, runs);
    let three = throughput(&url, 3, runs);
    println!(
        "3 processes vs 1: starts/s {:.2}×, items/s {:.2}×",
        three.0 / one.0,
        three.1 / one.1
    );
    for lease in [PostgresConfig::default().lease, Duration::from_secs(1)] {
        let took = takeover(&url, paced, lease);
        println!(
            "takeover after a SIGKILL, lease {lease:?} (renewed every {:?}): {took:.2?}",
            lease / 3
        );
    }
}

fn parse(role: &str) -> Role {
    let parts: Vec<&str> = role.split('|').collect();
    Role {
        index: parts[0].parse().expect("index"),
        processes: parts[1].parse().expect("processes"),
        runs: parts[2].parse().expect("runs"),
        paced: parts[3] == "paced",
        lease: Duration::from_millis(parts[4].parse().expect("lease")),
        url: parts[5].to_owned(),
        schema: parts[6].to_owned(),
    }
}

// ---- the child ----

/// Ten numbers every 10 ms: a run that lasts (for the takeover).
struct Paced {
    next: u64,
}

impl Source<u64> for Paced {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let stop = (self.next + 10).min(2_000);
        out.extend(self.next..stop);
        self.next = stop;
        Ok(if stop == 2_000 {
            Produced::Done
        } else {
            Produced::More
        })
    }

    fn snapshot(&mut self) -> Result<Option<serde_json::Value>, BoxError> {
        Ok(Some(self.next.into()))
    }

    fn restore(&mut self, position: serde_json::Value) -> Result<(), BoxError> {
        self.next = serde_json::from_value(position)?;
        Ok(())
    }
}

fn flow(paced: bool) -> FlowDefinition<u64> {
    let builder = FlowDefinition::<u64>::builder("work");
    let builder = if paced {
        builder.source("numbers", |_| Paced { next: 0 })
    } else {
        builder.source("numbers", |_| source_iter(0..ITEMS))
    };
    builder
        .transform("double", |_| {
            transform_fn(|x: u64, out: &mut Emitter<u64>| {
                out.push(x * 2);
                Ok(())
            })
        })
        .sink("sum", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "double", "sum"])
        .build()
        .expect("flow")
}

fn child(role: Role) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async {
        let config = PostgresConfig {
            schema: Some(role.schema.clone()),
            worker: Some(format!("w{}", role.index)),
            lease: role.lease,
            ..PostgresConfig::default()
        };
        let runtime = Arc::new(
            Runtime::builder()
                .postgres_with(role.url.clone(), config)
                .register(flow(role.paced))
                .expect("register")
                .start()
                .await
                .expect("start runtime"),
        );
        let began = Instant::now();
        let mut starts = tokio::task::JoinSet::new();
        for _ in (role.index..role.runs).step_by(role.processes) {
            let runtime = runtime.clone();
            starts.spawn(async move { runtime.start_with("work", RunOptions::new()).await });
        }
        while let Some(started) = starts.join_next().await {
            started.expect("join").expect("start run");
        }
        say(&format!("started {}", began.elapsed().as_micros()));
        let stdin = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
        });
        let _ = stdin.await;
        drop(runtime);
        say("stopped");
    });
}

// ---- the parent ----

/// A fresh schema (tables made by a store), a client on it, its name.
fn schema(rt: &tokio::runtime::Runtime, url: &str) -> (tokio_postgres::Client, String) {
    let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
    rt.block_on(async {
        let config = PostgresConfig {
            schema: Some(name.clone()),
            ..PostgresConfig::default()
        };
        drop(
            PostgresStore::connect_with(url, config)
                .await
                .expect("store"),
        );
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("SET search_path TO \"{name}\""))
            .await
            .expect("search path");
        (client, name)
    })
}

fn drop_schema(rt: &tokio::runtime::Runtime, db: &tokio_postgres::Client, name: &str) {
    rt.block_on(db.batch_execute(&format!("DROP SCHEMA \"{name}\" CASCADE")))
        .expect("drop schema");
}

fn count(rt: &tokio::runtime::Runtime, db: &tokio_postgres::Client, sql: &str) -> i64 {
    rt.block_on(async { db.query_one(sql, &[]).await.expect(sql).get(0) })
}

fn spawn(
    index: usize,
    processes: usize,
    runs: usize,
    paced: bool,
    lease: Duration,
    url: &str,
    schema: &str,
) -> Running {
    let exe = std::env::current_exe().expect("current exe");
    let role = format!(
        "{index}|{processes}|{runs}|{}|{}|{url}|{schema}",
        if paced { "paced" } else { "fast" },
        lease.as_millis()
    );
    Running::spawn(
        &exe,
        &[(CHILD_ENV, role.into())],
        index,
        Duration::from_secs(600),
    )
}

/// Starts `runs` over `processes`; (starts/s, items/s).
fn throughput(url: &str, processes: usize, runs: usize) -> (f64, f64) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let (db, name) = schema(&rt, url);
    let lease = PostgresConfig::default().lease;
    let began = Instant::now();
    let mut children: Vec<Running> = (0..processes)
        .map(|i| spawn(i, processes, runs, false, lease, url, &name))
        .collect();
    let mut slowest = Duration::ZERO;
    for child in &mut children {
        let micros: u64 = child.expect("started ").parse().expect("micros");
        slowest = slowest.max(Duration::from_micros(micros));
    }
    while count(
        &rt,
        &db,
        "SELECT count(*) FROM runs WHERE status IN (3, 4, 5)",
    ) < runs as i64
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = began.elapsed();
    for child in &mut children {
        child.say("stop");
        child.expect("stopped");
    }
    for mut child in children {
        child.process.wait().expect("reap");
    }
    let finished = count(&rt, &db, "SELECT count(*) FROM runs WHERE status = 3");
    assert_eq!(finished, runs as i64, "every run finished");
    drop_schema(&rt, &db, &name);
    let starts = runs as f64 / slowest.as_secs_f64();
    let items = (runs as u64 * ITEMS) as f64 / wall.as_secs_f64();
    println!(
        "| throughput | {processes} | {runs} | {:.0} | {:.2}M | {wall:.2?} |",
        starts,
        items / 1e6
    );
    (starts, items)
}

/// 3 processes, one killed once started; the time until its unfinished
/// runs are all claimed by the others.
fn takeover(url: &str, runs: usize, lease: Duration) -> Duration {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let (db, name) = schema(&rt, url);
    let mut children: Vec<Running> = (0..3)
        .map(|i| spawn(i, 3, runs, true, lease, url, &name))
        .collect();
    for child in &mut children {
        child.expect("started ");
    }
    let victim = children.remove(1);
    victim.kill();
    let killed = Instant::now();
    let left = "SELECT count(*) FROM runs WHERE lease_owner = 'w1' AND status NOT IN (3, 4, 5)";
    while count(&rt, &db, left) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = killed.elapsed();
    while count(
        &rt,
        &db,
        "SELECT count(*) FROM runs WHERE status IN (3, 4, 5)",
    ) < runs as i64
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for child in &mut children {
        child.say("stop");
        child.expect("stopped");
    }
    for mut child in children {
        child.process.wait().expect("reap");
    }
    drop_schema(&rt, &db, &name);
    took
}
