//! troupe's metrics in Prometheus's text format: a short run with the
//! `metrics-exporter-prometheus` recorder installed, then its scrape output.
//!
//! `cargo run --example prometheus`
//!
//! troupe records through the `metrics` facade and forces no exporter: an
//! application installs the recorder it wants, once, before its runtime
//! starts. Here the recorder's handle renders what a scrape of
//! `/metrics` would return (an application serves it over HTTP, e.g. with
//! the exporter's `http-listener` feature or its own web framework). The
//! names are constants in `troupe::metrics`.
//!
//! The run: 100,000 numbers through `square` (one fails once and is
//! retried, one is refused for good and dead-lettered) into `sum`, then a
//! step that waits for a signal, journaled in SQLite in a temporary
//! directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{Value, json};
use troupe::prelude::*;

const NUMBERS: u64 = 100_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before the runtime: what is recorded before a recorder is installed
    // goes nowhere.
    let scrape = PrometheusBuilder::new().install_recorder()?;

    let failed_once = Arc::new(AtomicBool::new(false));
    let squares = FlowDefinition::<u64>::builder("squares")
        .source("numbers", |_| source_iter(1..=NUMBERS))
        .transform("square", move |_| {
            let failed_once = failed_once.clone();
            transform_fn(move |x: u64, out: &mut Emitter<u64>| {
                if x == 1_000 && !failed_once.swap(true, Ordering::Relaxed) {
                    return Err("a flaky lookup; retried".into());
                }
                if x == 2_000 {
                    return Err(PermanentError::new("refused for good").into());
                }
                out.push(x * x % 1_000_003);
                Ok(())
            })
        })
        .sink("sum", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "square", "sum"])
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()?;
    let approval = FlowDefinition::<u64>::builder("approval")
        .step("decide", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    Ok(ctx
                        .wait_signal("approve", None)
                        .await?
                        .unwrap_or(Value::Null))
                }
            })
        })
        .build()?;

    let dir = std::env::temp_dir().join(format!("troupe-prometheus-{}", std::process::id()));
    let runtime = Runtime::builder()
        .sqlite(dir.join("journal.sqlite"))
        .register(squares)?
        .register(approval)?
        .start()
        .await?;
    let outcome = runtime.start("squares").await?.wait().await?;
    println!("# squares: {}", outcome.status.as_str());
    let run = runtime.start("approval").await?;
    runtime
        .send_signal(run.run_id(), None, "approve", json!("yes"))
        .await?;
    println!("# approval: {}", run.wait().await?.status.as_str());
    runtime.shutdown().await;
    std::fs::remove_dir_all(&dir)?;

    // What a scrape of `/metrics` returns.
    println!("{}", scrape.render());
    Ok(())
}
