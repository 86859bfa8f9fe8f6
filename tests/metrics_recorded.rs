//! The metrics a run moves, seen by a recorder installed as the global one
//! (the one test of this binary: the recorder is process-wide).

mod runtime_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use troupe::flow::{ControlEvent, DeadLetterPolicy, FlowDefinition, RestartPolicy, RunHandle};
use troupe::metrics as names;
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{
    Emitter, PermanentError, Produced, RetryPolicy, Sink, Source, StageContext, sink_fn,
    source_iter, step_fn,
};
use troupe::supervise::BoxError;

/// Sums every series of a name (labels aside).
#[derive(Default)]
struct Sums {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<GaugeSum>>>,
    histograms: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

/// A gauge's value now and the highest it reached.
#[derive(Default)]
struct GaugeSum(Mutex<(f64, f64)>);

impl GaugeSum {
    fn update(&self, f: impl FnOnce(f64) -> f64) {
        let mut g = self.0.lock().unwrap();
        g.0 = f(g.0);
        g.1 = g.1.max(g.0);
    }
}

impl GaugeFn for GaugeSum {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

/// Counts the values a histogram records.
struct Records(Arc<AtomicU64>);

impl HistogramFn for Records {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

struct Counting(Arc<AtomicU64>);

impl CounterFn for Counting {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

struct Shared(Arc<Sums>);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut map = self.0.counters.lock().unwrap();
        let sum = map.entry(key.name().to_owned()).or_default().clone();
        Counter::from_arc(Arc::new(Counting(sum)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut map = self.0.gauges.lock().unwrap();
        Gauge::from_arc(map.entry(key.name().to_owned()).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut map = self.0.histograms.lock().unwrap();
        let sum = map.entry(key.name().to_owned()).or_default().clone();
        Histogram::from_arc(Arc::new(Records(sum)))
    }
}

impl Sums {
    fn counter(&self, name: &str) -> u64 {
        let map = self.counters.lock().unwrap();
        map.get(name).map_or(0, |c| c.load(Ordering::Relaxed))
    }
    /// The gauge's value now and its highest.
    fn gauge(&self, name: &str) -> Option<(f64, f64)> {
        let map = self.gauges.lock().unwrap();
        map.get(name).map(|g| *g.0.lock().unwrap())
    }
    fn histogram(&self, name: &str) -> u64 {
        let map = self.histograms.lock().unwrap();
        map.get(name).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Emits ten items, then, on its next call, opens `gate` and ends: the
/// ten are counted out before the gate opens.
struct TenThenOpen {
    gate: Arc<Notify>,
    sent: bool,
}

impl Source<u64> for TenThenOpen {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.sent {
            self.gate.notify_one();
            return Ok(Produced::Done);
        }
        self.sent = true;
        for x in 0..10 {
            out.push(x);
        }
        Ok(Produced::More)
    }
}

/// Takes its first item only once `gate` opens: the others wait in its
/// pipe meanwhile.
struct Gated {
    gate: Arc<Notify>,
    open: bool,
}

impl Sink<u64> for Gated {
    async fn consume(&mut self, _: u64) -> Result<(), BoxError> {
        if !self.open {
            self.gate.notified().await;
            self.open = true;
        }
        Ok(())
    }
}

/// Waits for `run` to hibernate (progress rings when it does).
async fn hibernated(run: &RunHandle) {
    let mut watch = run.watch_progress();
    while !watch.progress().hibernated {
        assert!(watch.changed().await, "ended before it hibernated");
    }
}

#[tokio::test]
async fn a_run_moves_each_named_metric() {
    let sums = Arc::new(Sums::default());
    metrics::set_global_recorder(Shared(sums.clone())).expect("the only recorder");

    // A stream that panics once (a restart), fails one item once (a retry)
    // and gives up on one item.
    let panicked = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let (p, f) = (panicked.clone(), failed.clone());
    let stream = FlowDefinition::<u64>::builder("stream")
        .source("numbers", |_| source_iter(0..10_u64))
        .transform("check", move |_| {
            let (p, f) = (p.clone(), f.clone());
            troupe::stage::transform_fn(move |x: u64, out: &mut Emitter<u64>| {
                if x == 3 && !p.swap(true, Ordering::SeqCst) {
                    panic!("once");
                }
                if x == 5 {
                    return Err(PermanentError::new("five").into());
                }
                if x == 7 && !f.swap(true, Ordering::SeqCst) {
                    return Err("seven, once".into());
                }
                out.push(x);
                Ok(())
            })
        })
        .sink("drop", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "check", "drop"])
        .restart("check", RestartPolicy::transient())
        .retry("check", RetryPolicy::attempts(2))
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()
        .unwrap();
    // A pipe with items waiting in it.
    let gate = Arc::new(Notify::new());
    let (g1, g2) = (gate.clone(), gate.clone());
    let backlog = FlowDefinition::<u64>::builder("backlog")
        .source("ten", move |_| TenThenOpen {
            gate: g1.clone(),
            sent: false,
        })
        .sink("gated", move |_| Gated {
            gate: g2.clone(),
            open: false,
        })
        .pipeline(["ten", "gated"])
        .build()
        .unwrap();
    // A step that waits for a signal, and one that sleeps on a durable timer.
    let waits = FlowDefinition::<u64>::builder("waits")
        .step("wait", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move { Ok(ctx.wait_signal("go", None).await?.unwrap_or(Value::Null)) }
            })
        })
        .build()
        .unwrap();
    let nap = FlowDefinition::<u64>::builder("nap")
        .step("nap", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    ctx.sleep("nap", Duration::from_secs(3600)).await?;
                    Ok(Value::Null)
                }
            })
        })
        .build()
        .unwrap();
    // SQLite: its commit's fsync is timed on its own.
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .sqlite(dir.path().join("journal.sqlite"))
        .hibernate_after(Duration::ZERO)
        .register(stream)
        .unwrap()
        .register(backlog)
        .unwrap()
        .register(waits)
        .unwrap()
        .register(nap)
        .unwrap()
        .start()
        .await
        .unwrap();
    for flow in ["stream", "backlog"] {
        let run = runtime.start(flow).await.unwrap();
        assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    }
    // Each hibernates (waiting, its timer armed first) before a signal or
    // a cancel wakes it.
    let run = runtime.start("waits").await.unwrap();
    hibernated(&run).await;
    runtime
        .send_signal(run.run_id(), None, "go", json!(1))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    let run = runtime.start("nap").await.unwrap();
    hibernated(&run).await;
    let reason = "enough".to_owned();
    run.send(ControlEvent::Cancel { reason }).await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Cancelled);
    runtime.shutdown().await;

    for name in [
        names::JOURNAL_COMMITS,
        names::RUNS_STARTED,
        names::RUNS_ENDED,
        names::STAGE_RESTARTS,
        names::DEAD_LETTERS,
        names::SIGNALS_TAKEN,
        names::ITEM_RETRIES,
        names::RUNS_WOKEN,
    ] {
        assert!(sums.counter(name) > 0, "{name} did not move");
    }
    // A woken run counts as resumed.
    assert!(sums.counter(names::RUNS_STARTED) >= 4);
    assert_eq!(sums.counter(names::RUNS_ENDED), 4);
    assert_eq!(sums.counter(names::DEAD_LETTERS), 1);
    // Every item of both streams, counted per batch: 10 out of each
    // source, 10 taken by `check`, which passes 9 on to `drop` (one
    // dead-lettered; none lost to the restart or counted twice by the
    // retries), 10 taken by `gated`.
    assert_eq!(sums.counter(names::STAGE_ITEMS_OUT), 10 + 9 + 10);
    assert_eq!(sums.counter(names::STAGE_ITEMS_IN), 10 + 9 + 10);
    for name in [
        names::JOURNAL_COMMIT_SECONDS,
        names::JOURNAL_COMMIT_OPS,
        names::JOURNAL_SYNC_SECONDS,
    ] {
        assert!(sums.histogram(name) > 0, "{name} recorded nothing");
    }
    // Gauges moved and came back.
    for name in [
        names::TIMERS_ARMED,
        names::STAGE_WAITS,
        names::WAITING_RUNS,
        names::HIBERNATED_RUNS,
        names::STAGE_INPUT_DEPTH,
    ] {
        let (now, highest) = sums.gauge(name).unwrap_or_else(|| panic!("no {name}"));
        assert!(highest > 0.0, "{name} never rose");
        assert_eq!(now, 0.0, "{name} did not come back");
    }
    // `gated` took its first item with nine behind it.
    let (_, deepest) = sums.gauge(names::STAGE_INPUT_DEPTH).unwrap();
    assert!(deepest >= 9.0, "deepest input: {deepest}");
    assert!(sums.gauge(names::JOURNAL_QUEUED).is_some());
}
