//! A metrics recorder that can be switched on and off within one bench
//! binary (the global recorder is set once per process): off, every
//! metric is a no-op handle, as without a recorder; on, each series is
//! kept in atomics, as a real recorder (e.g. Prometheus's) keeps it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

/// One series: a count or a sum of values (an `f64`'s bits for gauges).
#[derive(Default)]
struct Series(AtomicU64);

impl CounterFn for Series {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Series {
    fn increment(&self, value: f64) {
        let add = |bits: u64| Some((f64::from_bits(bits) + value).to_bits());
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add);
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for Series {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The switchable recorder (see the module docs).
#[derive(Default)]
pub struct Switch {
    on: AtomicBool,
    series: Mutex<HashMap<Key, Arc<Series>>>,
}

impl Switch {
    /// The process's recorder, installed on first use (off).
    pub fn global() -> &'static Switch {
        static SWITCH: OnceLock<&'static Switch> = OnceLock::new();
        SWITCH.get_or_init(|| {
            let switch: &'static Switch = Box::leak(Box::default());
            metrics::set_global_recorder(switch).expect("the only recorder");
            switch
        })
    }

    /// Records from now on, or no longer.
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// How many series were recorded into.
    pub fn series(&self) -> usize {
        self.series.lock().unwrap().len()
    }

    fn series_of(&self, key: &Key) -> Option<Arc<Series>> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        let mut series = self.series.lock().unwrap();
        Some(series.entry(key.clone()).or_default().clone())
    }
}

impl Recorder for &'static Switch {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.series_of(key)
            .map_or_else(Counter::noop, Counter::from_arc)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.series_of(key)
            .map_or_else(Gauge::noop, Gauge::from_arc)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.series_of(key)
            .map_or_else(Histogram::noop, Histogram::from_arc)
    }
}
