//! Quickstart: an order-processing flow on a troupe runtime, end to end.
//!
//! `cargo run --example quickstart`
//!
//! Orders come from a source, go through a validate/enrich stage whose
//! per-order logic is an `fsm!` machine, and land in a sink. The run is
//! journaled in SQLite under `./troupe-data`; the example pauses and resumes
//! it with control events, an enrichment call fails once and the order is
//! retried on its stage (no order is lost: the stage's output counts the
//! retry), and it ends with the outcome, the structured output and the run
//! list (run it twice: the second run lists the first).
//!
//! The progress bars (one per stage, on a terminal) read the run's live
//! progress: `RunHandle::watch_progress`, every 100 ms.
//!
//! The source and the sink checkpoint (every 100 ms): the source's position
//! is the next order number, the sink's state its booked count and
//! revenue. Kill the example (Ctrl-C) half-way and run it again: the killed
//! run resumes from its last checkpoint, and the example says from where.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use troupe::prelude::*;
use troupe::store::Store;

const ORDERS: u64 = 400;

#[derive(Debug, Clone)]
struct Order {
    id: u64,
    amount_cents: u64,
    region: Option<&'static str>,
}

/// Emits the orders, ten every 10 ms, as if they arrived from a queue.
struct Incoming(u64);

impl Source<Order> for Incoming {
    async fn produce(&mut self, out: &mut Emitter<Order>) -> Result<Produced, BoxError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        for _ in 0..10 {
            if self.0 == ORDERS {
                return Ok(Produced::Done);
            }
            // Every 50th order has no amount: validation rejects it.
            let amount_cents = if self.0 % 50 == 7 {
                0
            } else {
                1_000 + self.0 * 13
            };
            out.push(Order {
                id: self.0,
                amount_cents,
                region: None,
            });
            self.0 += 1;
        }
        Ok(Produced::More)
    }

    // Checkpoints: the position is the next order to emit.
    fn snapshot(&mut self) -> Result<Option<serde_json::Value>, BoxError> {
        Ok(Some(serde_json::json!(self.0)))
    }

    fn restore(&mut self, position: serde_json::Value) -> Result<(), BoxError> {
        self.0 = serde_json::from_value(position)?;
        Ok(())
    }
}

// The per-order check, as a state machine.
#[derive(Debug, Clone, PartialEq, StateVariant)]
enum Check {
    Received,
    Valid,
    Enriched,
    Rejected(String),
}

#[derive(Debug, EventVariant)]
enum CheckEvent {
    Validate,
    Enrich,
}

struct CheckCtx {
    order: Order,
    enrichment_down: Arc<AtomicBool>,
}
impl FsmContext for CheckCtx {}

#[derive(Debug)]
enum NoAction {}

#[async_trait]
impl FsmAction for NoAction {
    type Context = CheckCtx;
    async fn execute(&self, _: &mut CheckCtx) -> Result<(), FsmError> {
        match *self {}
    }
}

fn check() -> StateMachine<Check, CheckEvent, CheckCtx, NoAction> {
    fsm! {
        state: Check; event: CheckEvent; context: CheckCtx; action: NoAction;
        initial: Check::Received;

        state Check::Received {
            on CheckEvent::Validate => [Check::Valid, Check::Rejected] |_, _, c| {
                let next = if c.order.amount_cents == 0 {
                    Check::Rejected(format!("order {} has no amount", c.order.id))
                } else {
                    Check::Valid
                };
                Box::pin(async move { Ok(Transition::to(next)) })
            };
        }
        state Check::Valid {
            on CheckEvent::Enrich => [Check::Enriched] |_, _, c| {
                // The enrichment service times out once, on order 137.
                if c.order.id == 137 && c.enrichment_down.swap(false, Ordering::SeqCst) {
                    let failure = format!("enrichment timed out for order {}", c.order.id);
                    return Box::pin(async move { Err(FsmError::handler(failure)) });
                }
                c.order.region = Some(["eu", "us", "apac"][(c.order.id % 3) as usize]);
                Box::pin(async { Ok(Transition::to(Check::Enriched)) })
            };
        }
    }
}

/// Validates and enriches each order by running its check machine.
struct ValidateEnrich {
    enrichment_down: Arc<AtomicBool>,
    rejected: u64,
    /// Rejections of every start of the stage, for the final accounting.
    rejected_total: Arc<AtomicU64>,
}

impl Transform<Order> for ValidateEnrich {
    async fn process(&mut self, order: Order, out: &mut Emitter<Order>) -> Result<(), BoxError> {
        let mut machine = check();
        let mut ctx = CheckCtx {
            order,
            enrichment_down: self.enrichment_down.clone(),
        };
        machine.handle(CheckEvent::Validate, &mut ctx).await?;
        if let Check::Rejected(_) = machine.state() {
            self.rejected += 1;
            self.rejected_total.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        machine.handle(CheckEvent::Enrich, &mut ctx).await?;
        out.push(ctx.order);
        Ok(())
    }

    async fn complete(
        &mut self,
        _: &mut Emitter<Order>,
    ) -> Result<Option<serde_json::Value>, BoxError> {
        Ok(Some(
            serde_json::json!({ "rejected_since_last_start": self.rejected }),
        ))
    }
}

/// Books accepted orders.
struct Book {
    booked: Arc<AtomicU64>,
    /// The sink's state, kept in checkpoints.
    orders: u64,
    revenue_cents: u64,
}

impl Sink<Order> for Book {
    async fn consume(&mut self, order: Order) -> Result<(), BoxError> {
        self.orders += 1;
        self.revenue_cents += order.amount_cents;
        self.booked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<serde_json::Value>, BoxError> {
        Ok(Some(
            serde_json::json!({ "orders": self.orders, "revenue_cents": self.revenue_cents }),
        ))
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<(), BoxError> {
        self.orders = serde_json::from_value(state["orders"].clone())?;
        self.revenue_cents = serde_json::from_value(state["revenue_cents"].clone())?;
        Ok(())
    }

    async fn complete(&mut self) -> Result<Option<serde_json::Value>, BoxError> {
        Ok(Some(
            serde_json::json!({ "orders": self.orders, "revenue_cents": self.revenue_cents }),
        ))
    }
}

/// A bar per stage, drawn from the run's progress every 100 ms (and at
/// each change of a stage's state) until the run ends. Drawn on a terminal
/// only; hidden when the output is piped (e.g. in CI).
fn draw_progress(run: &RunHandle, bars: &MultiProgress) -> tokio::task::JoinHandle<()> {
    let style = ProgressStyle::with_template("  {prefix:>15} {bar:30} {pos:>3}/{len} {msg}")
        .expect("a valid template");
    let stages: Vec<(String, ProgressBar)> = run
        .stage_names()
        .iter()
        .map(|name| {
            let bar = bars.add(ProgressBar::new(ORDERS).with_style(style.clone()));
            bar.set_prefix(name.clone());
            (name.clone(), bar)
        })
        .collect();
    let mut watch = run.watch_progress();
    tokio::spawn(async move {
        while let Some(progress) = watch.next(Duration::from_millis(100)).await {
            for (name, bar) in &stages {
                let Some(stage) = progress.stage(name) else {
                    continue;
                };
                // A source's work is what it emits; the others', what they take.
                let done = if stage.items_in == 0 {
                    stage.items_out
                } else {
                    stage.items_in
                };
                bar.set_position(done);
                bar.set_message(format!(
                    "{:?}, {} queued, {} retried, {} restarted",
                    stage.state, stage.pipe_depth, stage.retries, stage.restarts
                ));
            }
        }
        for (_, bar) in &stages {
            // Left where the counts are (`finish` would fill the bar).
            bar.abandon();
        }
    })
}

/// How many orders the `book` stage took so far, from the run's progress.
fn booked_now(run: &RunHandle) -> u64 {
    run.progress().stage("book").map_or(0, |s| s.items_in)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let booked = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicBool::new(true));
    let (b, d, r) = (booked.clone(), down.clone(), rejected.clone());
    let orders = FlowDefinition::<Order>::builder("orders")
        .source("incoming", |_| Incoming(0))
        .transform("validate-enrich", move |_| ValidateEnrich {
            enrichment_down: d.clone(),
            rejected: 0,
            rejected_total: r.clone(),
        })
        .sink("book", move |_| Book {
            booked: b.clone(),
            orders: 0,
            revenue_cents: 0,
        })
        .pipeline(["incoming", "validate-enrich", "book"])
        // An order whose enrichment fails is tried again (3 attempts); a
        // stage that still fails is restarted and retries the order first.
        .retry("validate-enrich", RetryPolicy::attempts(3))
        // The flow supervises its stages as an OTP supervisor: restart only
        // the stage that failed, and fail the run past 3 restarts in 10 s.
        .supervision(Supervision::one_for_one().intensity(3, Duration::from_secs(10)))
        // Restart validate-enrich after a failure (not after a completion),
        // 100 ms later, then 200 ms, ... (the default backoff).
        .restart("validate-enrich", RestartPolicy::transient())
        // A crash costs at most 100 ms of orders: the run resumes from its
        // last checkpoint (the source re-emits from its position).
        .checkpoints(Checkpoints::every(Duration::from_millis(100)))
        .build()?;

    let runtime = Runtime::builder().register(orders)?.start().await?;
    // A run of a killed earlier process resumes where its last checkpoint was.
    for resumed in runtime.resumed() {
        let from = runtime.journal().last_checkpoint(resumed.run_id()).await?;
        match from {
            Some(c) => println!(
                "run {} resumes from checkpoint {}: orders from #{}, {} booked before",
                resumed.run_id(),
                c.id,
                c.stages["incoming"].state.clone().unwrap_or_default(),
                c.stages["book"].state.clone().unwrap_or_default()["orders"],
            ),
            None => println!("run {} resumes from its start", resumed.run_id()),
        }
        // It may have been killed while paused (the pause is durable too).
        let _ = resumed.send(ControlEvent::Resume).await;
        let outcome = resumed.wait().await?;
        println!("run {} ended: {:?}", resumed.run_id(), outcome.status);
    }
    booked.store(0, Ordering::SeqCst);
    rejected.store(0, Ordering::SeqCst);
    let options = RunOptions::new()
        .goal("process today's orders")
        .owner("orders-example");
    let run = runtime.start_with("orders", options).await?;
    println!("run {} started", run.run_id());
    let progress = MultiProgress::new();
    let drawn = draw_progress(&run, &progress);

    tokio::time::sleep(Duration::from_millis(150)).await;
    run.send(ControlEvent::Pause).await?;
    progress.suspend(|| {
        println!(
            "paused at {} booked orders (state {:?})",
            booked_now(&run),
            run.state()
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    progress.suspend(|| println!("still {} booked while paused; resuming", booked_now(&run)));
    run.send(ControlEvent::Resume).await?;

    let outcome = run.wait().await?;
    drawn.await?;
    let journal = runtime.journal();
    println!("\noutcome: {:?}", outcome.status);
    println!(
        "structured output: {}",
        serde_json::to_string_pretty(&outcome.structured_output)?
    );
    for failure in journal.list_failures(run.run_id()).await? {
        println!(
            "supervised failure in `{}`: {} ({})",
            failure.step_id,
            failure.reason,
            failure.error_json.unwrap_or_default()
        );
    }
    // Every order is accounted for: booked, rejected by validation, or
    // dead-lettered (stage work is at-least-once, so never fewer).
    let dead_lettered = journal.list_dead_letters(run.run_id()).await?.len() as u64;
    let (booked, rejected) = (
        booked.load(Ordering::SeqCst),
        rejected.load(Ordering::SeqCst),
    );
    println!(
        "\norders: {ORDERS} in = {booked} booked + {rejected} rejected + {dead_lettered} dead-lettered"
    );
    if booked + rejected + dead_lettered < ORDERS {
        return Err(format!(
            "{} orders unaccounted for",
            ORDERS - booked - rejected - dead_lettered
        )
        .into());
    }
    println!("\nruns of this example so far:");
    for past in runtime.runs().list_by_owner("orders-example").await? {
        println!(
            "  {} {:?} started {}",
            past.id, past.status, past.created_at
        );
    }
    let journal = runtime
        .journal_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("\njournal: {journal}");
    println!("inspect it: cargo run --bin troupe -- runs list --journal {journal}");
    println!("            cargo run --bin troupe -- runs show <RUN_ID> --journal {journal}");
    runtime.shutdown().await;
    Ok(())
}
