//! Replaying dead letters: the items a stage gave up on go back into a
//! stage's input — of the same run, another run, a new run, or a run that
//! is not live yet — through the run's inbox, and each inbox entry is
//! settled once the stage is done with its item.

mod runtime_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use runtime_support::{Record, Seen, cancel_and_wait, runtime_on, settle};
use troupe::flow::{DeadLetterPolicy, FlowDefinition, HandleError, RetryPolicy};
use troupe::records::RunStatus;
use troupe::runtime::{ReplayInto, RuntimeError};
use troupe::stage::{Emitter, PermanentError, Produced, Source, Transform};
use troupe::store::{MemoryStore, Store};
use troupe::supervise::BoxError;

/// Emits `0..n`, then waits forever (a run that stays live), unless `end`.
struct Numbers {
    next: u64,
    n: u64,
    end: bool,
}

impl Source<u64> for Numbers {
    async fn produce(&mut self, out: &mut Emitter<u64>) -> Result<Produced, BoxError> {
        if self.next == self.n {
            if self.end {
                return Ok(Produced::Done);
            }
            std::future::pending::<()>().await;
        }
        out.push(self.next);
        self.next += 1;
        Ok(Produced::More)
    }
}

/// Gives up on items 3 and 7 while `broken` is set.
struct Flaky {
    broken: Arc<AtomicBool>,
}

impl Transform<u64> for Flaky {
    async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
        if self.broken.load(Ordering::SeqCst) && (x == 3 || x == 7) {
            return Err(PermanentError::new(format!("item {x}: upstream service down")).into());
        }
        out.push(x);
        Ok(())
    }
}

struct Probe {
    seen: Seen,
    broken: Arc<AtomicBool>,
}

/// `numbers (0..10) → flaky → record`, carrying on past dead letters.
fn flow(end: bool, serde: bool) -> (FlowDefinition<u64>, Probe) {
    let seen = Seen::default();
    let broken = Arc::new(AtomicBool::new(true));
    let (s, b) = (seen.clone(), broken.clone());
    let builder = FlowDefinition::<u64>::builder("flaky")
        .source("numbers", move |_| Numbers {
            next: 0,
            n: 10,
            end,
        })
        .transform("flaky", move |_| Flaky { broken: b.clone() })
        .sink("record", move |_| Record(s.clone()))
        .pipeline(["numbers", "flaky", "record"])
        .default_retry(RetryPolicy::none())
        .on_dead_letter(DeadLetterPolicy::Continue);
    let builder = if serde {
        builder.serde_items()
    } else {
        builder
    };
    (builder.build().unwrap(), Probe { seen, broken })
}

fn sorted(seen: &Seen) -> Vec<u64> {
    let mut items = seen.lock().unwrap().clone();
    items.sort_unstable();
    items
}

async fn all_settled(store: &Arc<dyn Store>, run_id: uuid::Uuid, ids: &[uuid::Uuid]) {
    let inbox = store.list_inbox(run_id).await.unwrap();
    for id in ids {
        let entry = inbox.iter().find(|e| e.id == *id).expect("accepted");
        let settled = entry
            .settled
            .as_ref()
            .expect("settled once the stage is done");
        assert_eq!(settled.undeliverable, None, "{entry:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn dead_letters_replayed_into_the_same_live_run_reach_the_sink() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let (def, probe) = flow(false, true);
    runtime.register(def).await.unwrap();
    let run = runtime.start("flaky").await.unwrap();
    settle().await;
    assert_eq!(sorted(&probe.seen), [0, 1, 2, 4, 5, 6, 8, 9]);
    assert_eq!(
        store.list_dead_letters(run.run_id()).await.unwrap().len(),
        2
    );

    probe.broken.store(false, Ordering::SeqCst);
    let replayed = runtime
        .replay_dead_letters(run.run_id(), "flaky", ReplayInto::SameRun)
        .await
        .unwrap();
    assert_eq!(replayed.run_id, run.run_id());
    assert_eq!(replayed.ids.len(), 2);
    settle().await;
    assert_eq!(sorted(&probe.seen), (0..10).collect::<Vec<_>>());
    all_settled(&store, run.run_id(), &replayed.ids).await;

    // A replayed item that fails again is dead-lettered again (and its
    // entry settled: the stage is done with it).
    probe.broken.store(true, Ordering::SeqCst);
    let again = runtime
        .replay_dead_letters(run.run_id(), "flaky", ReplayInto::SameRun)
        .await
        .unwrap();
    settle().await;
    all_settled(&store, run.run_id(), &again.ids).await;
    assert_eq!(
        store.list_dead_letters(run.run_id()).await.unwrap().len(),
        4
    );

    cancel_and_wait(&run).await;
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dead_letters_of_an_ended_run_are_replayed_into_a_new_run() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let (def, probe) = flow(true, true);
    runtime.register(def).await.unwrap();
    let input = serde_json::json!({"batch": 7});
    let first = runtime
        .start_with("flaky", troupe::flow::RunOptions::new().input(&input))
        .await
        .unwrap();
    let outcome = first.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished);
    assert_eq!(outcome.dead_letters()["flaky"], 2);

    // The run has ended: it takes nothing more.
    let refused = runtime
        .replay_dead_letters(first.run_id(), "flaky", ReplayInto::SameRun)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, RuntimeError::Input(HandleError::Finished { .. })),
        "{refused:?}"
    );

    probe.broken.store(false, Ordering::SeqCst);
    probe.seen.lock().unwrap().clear();
    let replayed = runtime
        .replay_dead_letters(first.run_id(), "flaky", ReplayInto::NewRun)
        .await
        .unwrap();
    let second = replayed.run.clone().expect("a new run is live here");
    assert_ne!(second.run_id(), first.run_id());
    // The new run works on the same input.
    let record = store.get_run(second.run_id()).await.unwrap().unwrap();
    assert_eq!(record.input, input);
    let outcome = second.wait().await.unwrap();
    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    // Its own items, and the two replayed ones before its stage completed.
    let mut expected: Vec<u64> = (0..10).chain([3, 7]).collect();
    expected.sort_unstable();
    assert_eq!(sorted(&probe.seen), expected);
    all_settled(&store, second.run_id(), &replayed.ids).await;
    assert_eq!(
        outcome.structured_output.unwrap()["steps"]["flaky"]["items_in"],
        12
    );
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn items_replayed_into_a_run_that_is_not_live_are_handled_when_it_resumes() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let first = runtime_on(&store).await;
    let (def, _) = flow(false, true);
    first.register(def).await.unwrap();
    let run_id = first.start("flaky").await.unwrap().run_id();
    settle().await;
    drop(first);
    settle().await;

    let second = runtime_on(&store).await;
    let replayed = second
        .replay_dead_letters(run_id, "flaky", ReplayInto::SameRun)
        .await
        .unwrap();
    assert!(replayed.run.is_none(), "not live: waits in the journal");
    let (def, probe) = flow(false, true);
    probe.broken.store(false, Ordering::SeqCst);
    let report = second.register(def).await.unwrap();
    settle().await;
    // The resumed run re-reads its source (no position yet) and takes the
    // replayed items: 3 and 7 arrive twice.
    let mut expected: Vec<u64> = (0..10).chain([3, 7]).collect();
    expected.sort_unstable();
    assert_eq!(sorted(&probe.seen), expected);
    all_settled(&store, run_id, &replayed.ids).await;
    let run = report.resumed[0].clone();
    cancel_and_wait(&run).await;
    second.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_replayed_without_kept_items_or_dead_letters() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let (def, _) = flow(true, false);
    runtime.register(def).await.unwrap();
    let run = runtime.start("flaky").await.unwrap();
    run.wait().await.unwrap();
    let unkept = runtime
        .replay_dead_letters(run.run_id(), "flaky", ReplayInto::NewRun)
        .await
        .unwrap_err();
    assert!(
        matches!(unkept, RuntimeError::NothingToReplay { unkept: 2, .. }),
        "{unkept:?}"
    );
    let none = runtime
        .replay_dead_letters(run.run_id(), "record", ReplayInto::NewRun)
        .await
        .unwrap_err();
    assert!(
        matches!(none, RuntimeError::NothingToReplay { unkept: 0, .. }),
        "{none:?}"
    );
    assert_eq!(runtime.live_runs().len(), 0, "no run was started");
    runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn items_another_run_cannot_decode_are_refused_before_anything_is_accepted() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = runtime_on(&store).await;
    let (def, _) = flow(true, true);
    runtime.register(def).await.unwrap();
    let numbers = runtime.start("flaky").await.unwrap();
    numbers.wait().await.unwrap();
    // A live run of a flow over words, with a stage of the same name.
    let words = FlowDefinition::<String>::builder("words")
        .source("none", |_| Silent)
        .transform("flaky", |_| {
            troupe::stage::transform_fn(|w: String, out: &mut Emitter<String>| {
                out.push(w);
                Ok(())
            })
        })
        .sink("drop", |_| troupe::stage::sink_fn(|_: String| Ok(())))
        .pipeline(["none", "flaky", "drop"])
        .serde_items()
        .build()
        .unwrap();
    runtime.register(words).await.unwrap();
    let target = runtime.start("words").await.unwrap();
    let refused = runtime
        .replay_dead_letters(numbers.run_id(), "flaky", ReplayInto::Run(target.run_id()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            RuntimeError::Input(HandleError::EventRefused { .. })
        ),
        "{refused:?}"
    );
    assert!(store.list_inbox(target.run_id()).await.unwrap().is_empty());
    cancel_and_wait(&target).await;
    runtime.shutdown().await;
}

/// A source of words that never ends (nothing is emitted).
struct Silent;

impl Source<String> for Silent {
    async fn produce(&mut self, _: &mut Emitter<String>) -> Result<Produced, BoxError> {
        std::future::pending::<()>().await;
        Ok(Produced::Done)
    }
}
