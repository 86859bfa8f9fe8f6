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
use troupe::flow::{DeadLetterPolicy, FlowDefinition, RestartPolicy};
use troupe::metrics as names;
use troupe::records::RunStatus;
use troupe::runtime::Runtime;
use troupe::stage::{Emitter, PermanentError, StageContext, sink_fn, source_iter, step_fn};

/// Sums every series of a name (labels aside).
#[derive(Default)]
struct Sums {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<GaugeSum>>>,
    histograms: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

#[derive(Default)]
struct GaugeSum(Mutex<f64>);

impl GaugeFn for GaugeSum {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
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
    fn gauge(&self, name: &str) -> Option<f64> {
        let map = self.gauges.lock().unwrap();
        map.get(name).map(|g| *g.0.lock().unwrap())
    }
    fn histogram(&self, name: &str) -> u64 {
        let map = self.histograms.lock().unwrap();
        map.get(name).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

#[tokio::test]
async fn a_run_moves_each_named_metric() {
    let sums = Arc::new(Sums::default());
    metrics::set_global_recorder(Shared(sums.clone())).expect("the only recorder");

    // A stream that panics once (a restart) and gives up on one item.
    let panicked = Arc::new(AtomicBool::new(false));
    let p = panicked.clone();
    let stream = FlowDefinition::<u64>::builder("stream")
        .source("numbers", |_| source_iter(0..10_u64))
        .transform("check", move |_| {
            let p = p.clone();
            troupe::stage::transform_fn(move |x: u64, out: &mut Emitter<u64>| {
                if x == 3 && !p.swap(true, Ordering::SeqCst) {
                    panic!("once");
                }
                if x == 5 {
                    return Err(PermanentError::new("five").into());
                }
                out.push(x);
                Ok(())
            })
        })
        .sink("drop", |_| sink_fn(|_: u64| Ok(())))
        .pipeline(["numbers", "check", "drop"])
        .restart("check", RestartPolicy::transient())
        .on_dead_letter(DeadLetterPolicy::Continue)
        .build()
        .unwrap();
    // A step that sleeps on a durable timer, then waits for a signal.
    let waits = FlowDefinition::<u64>::builder("waits")
        .step("wait", |ctx: &StageContext| {
            let ctx = ctx.clone();
            step_fn(move |_| {
                let ctx = ctx.clone();
                async move {
                    ctx.sleep("nap", Duration::from_millis(5)).await?;
                    let got = ctx.wait_signal("go", None).await?;
                    Ok(got.unwrap_or(Value::Null))
                }
            })
        })
        .build()
        .unwrap();
    let runtime = Runtime::builder()
        .memory()
        .register(stream)
        .unwrap()
        .register(waits)
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = runtime.start("stream").await.unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    let run = runtime.start("waits").await.unwrap();
    // Taken whenever the wait starts: the inbox keeps it.
    runtime
        .send_signal(run.run_id(), None, "go", json!(1))
        .await
        .unwrap();
    assert_eq!(run.wait().await.unwrap().status, RunStatus::Finished);
    runtime.shutdown().await;

    for name in [
        names::JOURNAL_COMMITS,
        names::RUNS_STARTED,
        names::RUNS_ENDED,
        names::STAGE_RESTARTS,
        names::DEAD_LETTERS,
        names::SIGNALS_TAKEN,
    ] {
        assert!(sums.counter(name) > 0, "{name} did not move");
    }
    assert_eq!(sums.counter(names::RUNS_STARTED), 2);
    assert_eq!(sums.counter(names::RUNS_ENDED), 2);
    assert_eq!(sums.counter(names::DEAD_LETTERS), 1);
    for name in [names::JOURNAL_COMMIT_SECONDS, names::JOURNAL_COMMIT_OPS] {
        assert!(sums.histogram(name) > 0, "{name} recorded nothing");
    }
    // Gauges moved and came back.
    assert_eq!(sums.gauge(names::TIMERS_ARMED), Some(0.0));
    assert_eq!(sums.gauge(names::STAGE_WAITS), Some(0.0));
    assert!(sums.gauge(names::JOURNAL_QUEUED).is_some());
}
