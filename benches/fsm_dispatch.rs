//! Cost of one event through an `fsm!` machine (`handle` + executing the one
//! action it returns, a self-transition) against a hand-written `match`
//! machine doing the same work, in the same run; once with an action that
//! runs through its `#[async_trait]` future (`Count`), once with one that
//! answers [`FsmAction::execute_now`] (`CountNow`, cases `..._now`).
//! The `fsm_sync_...` cases run the same machine with synchronous handlers
//! (`sync |s, e, c| ...`, no future): through `handle_now` and
//! `execute_now` outside async code, and through `handle` +
//! `execute_actions` awaited.
//!
//! `cargo bench --bench fsm_dispatch`

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};

#[derive(Debug, Clone, Copy, PartialEq, StateVariant)]
enum Meter {
    Idle,
    Running { ticks: u64 },
    Stopped,
}

#[derive(Debug, Clone, Copy, EventVariant)]
enum Input {
    Start,
    Tick,
    Stop,
}

#[derive(Default)]
struct Counter {
    counted: u64,
}
impl FsmContext for Counter {}

/// Counts through its boxed `execute` future.
#[derive(Default)]
struct Count;

#[async_trait]
impl FsmAction for Count {
    type Context = Counter;
    async fn execute(&self, ctx: &mut Counter) -> Result<(), FsmError> {
        ctx.counted += 1;
        Ok(())
    }
}

/// Counts in `execute_now`, without a future.
#[derive(Default)]
struct CountNow;

#[async_trait]
impl FsmAction for CountNow {
    type Context = Counter;
    async fn execute(&self, ctx: &mut Counter) -> Result<(), FsmError> {
        ctx.counted += 1;
        Ok(())
    }
    fn execute_now(&self, ctx: &mut Counter) -> Option<Result<(), FsmError>> {
        ctx.counted += 1;
        Some(Ok(()))
    }
}

/// What the bench asks of its action types: both are zero-sized, so the
/// one-action `Vec` a transition carries allocates nothing.
trait BenchAction: FsmAction<Context = Counter> + Default + 'static {}
impl<A: FsmAction<Context = Counter> + Default + 'static> BenchAction for A {}

fn meter<A: BenchAction>() -> StateMachine<Meter, Input, Counter, A> {
    fsm! {
        state: Meter; event: Input; context: Counter; action: A; initial: Meter::Idle;
        state Meter::Idle {
            on Input::Start => |_, _, _| Box::pin(async { Ok(Transition::to(Meter::Running { ticks: 0 })) });
        }
        state Meter::Running {
            on Input::Tick => |s, _, _| {
                let Meter::Running { ticks } = *s else { unreachable!() };
                Box::pin(async move {
                    Ok(Transition { next_state: Meter::Running { ticks: ticks + 1 }, actions: vec![A::default()] })
                })
            };
            on Input::Stop => |_, _, _| Box::pin(async { Ok(Transition::to(Meter::Stopped)) });
        }
    }
}

/// `meter` with synchronous handlers.
fn meter_sync<A: BenchAction>() -> StateMachine<Meter, Input, Counter, A> {
    fsm! {
        state: Meter; event: Input; context: Counter; action: A; initial: Meter::Idle;
        state Meter::Idle {
            on Input::Start => sync |_, _, _| Transition::to(Meter::Running { ticks: 0 });
        }
        state Meter::Running {
            on Input::Tick => sync |s, _, _| {
                let Meter::Running { ticks } = *s else { unreachable!() };
                Transition { next_state: Meter::Running { ticks: ticks + 1 }, actions: vec![A::default()] }
            };
            on Input::Stop => sync |_, _, _| Transition::to(Meter::Stopped);
        }
    }
}

/// The same machine written by hand with the allocations the `fsm!` API
/// implies (the boxed handler future, and the `#[async_trait]` action future
/// unless the action answers `execute_now`): the floor of the API, so the
/// bench separates what the generated dispatch costs from what the API's
/// shape costs.
async fn hand_written_async<A: BenchAction>(
    state: Meter,
    input: Input,
    ctx: &mut Counter,
) -> Meter {
    type Fut<A> = std::pin::Pin<Box<dyn std::future::Future<Output = Transition<Meter, A>> + Send>>;
    let future: Fut<A> = match (state, input) {
        (Meter::Running { ticks }, Input::Tick) => Box::pin(async move {
            Transition {
                next_state: Meter::Running { ticks: ticks + 1 },
                actions: vec![A::default()],
            }
        }),
        (other, _) => Box::pin(async move { Transition::to(other) }),
    };
    let transition = future.await;
    for action in &transition.actions {
        match action.execute_now(ctx) {
            Some(result) => result,
            None => action.execute(ctx).await,
        }
        .expect("count");
    }
    transition.next_state
}

/// The baseline: the same machine as a hand-written `match`, action run inline.
fn hand_written(state: Meter, input: Input, ctx: &mut Counter) -> Meter {
    match (state, input) {
        (Meter::Idle, Input::Start) => Meter::Running { ticks: 0 },
        (Meter::Running { ticks }, Input::Tick) => {
            ctx.counted += 1;
            Meter::Running { ticks: ticks + 1 }
        }
        (Meter::Running { .. }, Input::Stop) => Meter::Stopped,
        (other, _) => other,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fsm_dispatch");

    group.bench_function("hand_written_match", |b| {
        b.iter_custom(|iters| {
            let mut ctx = Counter::default();
            let mut state = hand_written(Meter::Idle, Input::Start, &mut ctx);
            let start = Instant::now();
            for _ in 0..iters {
                state = hand_written(black_box(state), black_box(Input::Tick), &mut ctx);
            }
            let elapsed = start.elapsed();
            black_box((state, ctx.counted));
            elapsed
        })
    });

    async_cases::<Count>(&mut group, &rt, "");
    async_cases::<CountNow>(&mut group, &rt, "_now");
    sync_cases(&mut group, &rt);
    group.finish();
}

/// The synchronous handler with the synchronous action (`CountNow`): no
/// future, no allocation. Once outside async code (`handle_now`, then each
/// action's `execute_now`), once through the async API (`handle` and
/// `execute_actions`, awaited: their futures are not boxed).
fn sync_cases(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
) {
    group.bench_function("fsm_sync_handle_now_execute_now", |b| {
        b.iter_custom(|iters| {
            let mut machine = meter_sync::<CountNow>();
            let mut ctx = Counter::default();
            let start_event = Input::Start;
            machine
                .handle_now(&start_event, &mut ctx)
                .expect("sync")
                .expect("start");
            black_box(
                machine
                    .table()
                    .handles("Running", Input::Stop.variant_name()),
            );
            let start = Instant::now();
            for _ in 0..iters {
                let actions = machine
                    .handle_now(black_box(&Input::Tick), &mut ctx)
                    .expect("sync")
                    .expect("tick");
                for action in &actions {
                    action.execute_now(&mut ctx).expect("now").expect("count");
                }
            }
            let elapsed = start.elapsed();
            assert_eq!(ctx.counted, iters);
            black_box(machine.state());
            elapsed
        })
    });

    group.bench_function("fsm_sync_handle_and_execute_now", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut machine = meter_sync::<CountNow>();
                let mut ctx = Counter::default();
                machine.handle(Input::Start, &mut ctx).await.expect("start");
                black_box(
                    machine
                        .table()
                        .handles("Running", Input::Stop.variant_name()),
                );
                let start = Instant::now();
                for _ in 0..iters {
                    let actions = machine
                        .handle(black_box(Input::Tick), &mut ctx)
                        .await
                        .expect("tick");
                    machine
                        .execute_actions(actions, &mut ctx)
                        .await
                        .expect("count");
                }
                let elapsed = start.elapsed();
                assert_eq!(ctx.counted, iters);
                black_box(machine.state());
                elapsed
            })
        })
    });
}

/// The two async cases (the API's floor, then `fsm!`) for action type `A`.
fn async_cases<A: BenchAction>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    suffix: &str,
) {
    group.bench_function(
        format!("hand_written_async_same_allocations{suffix}"),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut ctx = Counter::default();
                    let mut state = Meter::Running { ticks: 0 };
                    let start = Instant::now();
                    for _ in 0..iters {
                        state = hand_written_async::<A>(
                            black_box(state),
                            black_box(Input::Tick),
                            &mut ctx,
                        )
                        .await;
                    }
                    let elapsed = start.elapsed();
                    assert_eq!(ctx.counted, iters);
                    black_box(state);
                    elapsed
                })
            })
        },
    );

    group.bench_function(format!("fsm_handle_and_execute{suffix}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut machine = meter::<A>();
                let mut ctx = Counter::default();
                machine.handle(Input::Start, &mut ctx).await.expect("start");
                // Stop is handled too: warm the other arm so it is not dead code.
                black_box(
                    machine
                        .table()
                        .handles("Running", Input::Stop.variant_name()),
                );
                let start = Instant::now();
                for _ in 0..iters {
                    let actions = machine
                        .handle(black_box(Input::Tick), &mut ctx)
                        .await
                        .expect("tick");
                    machine
                        .execute_actions(actions, &mut ctx)
                        .await
                        .expect("count");
                }
                let elapsed = start.elapsed();
                assert_eq!(ctx.counted, iters);
                black_box(machine.state());
                elapsed
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
