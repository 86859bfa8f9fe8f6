//! Cost of one event through an `fsm!` machine (`handle` + executing the one
//! action it returns, a self-transition) against a hand-written `match`
//! machine doing the same work, in the same run.
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

enum Count {
    One,
}

#[async_trait]
impl FsmAction for Count {
    type Context = Counter;
    async fn execute(&self, ctx: &mut Counter) -> Result<(), FsmError> {
        match self {
            Count::One => ctx.counted += 1,
        }
        Ok(())
    }
}

fn meter() -> StateMachine<Meter, Input, Counter, Count> {
    fsm! {
        state: Meter; event: Input; context: Counter; action: Count; initial: Meter::Idle;
        state Meter::Idle {
            on Input::Start => |_, _, _| Box::pin(async { Ok(Transition::to(Meter::Running { ticks: 0 })) });
        }
        state Meter::Running {
            on Input::Tick => |s, _, _| {
                let Meter::Running { ticks } = *s else { unreachable!() };
                Box::pin(async move {
                    Ok(Transition { next_state: Meter::Running { ticks: ticks + 1 }, actions: vec![Count::One] })
                })
            };
            on Input::Stop => |_, _, _| Box::pin(async { Ok(Transition::to(Meter::Stopped)) });
        }
    }
}

/// The same machine written by hand with the same three allocations the
/// `fsm!` API implies (boxed handler future, action `Vec`, `#[async_trait]`
/// action future): the floor of the API, so the bench separates what the
/// generated dispatch costs from what the API's shape costs.
async fn hand_written_async(state: Meter, input: Input, ctx: &mut Counter) -> Meter {
    type Fut =
        std::pin::Pin<Box<dyn std::future::Future<Output = Transition<Meter, Count>> + Send>>;
    let future: Fut = match (state, input) {
        (Meter::Running { ticks }, Input::Tick) => Box::pin(async move {
            Transition {
                next_state: Meter::Running { ticks: ticks + 1 },
                actions: vec![Count::One],
            }
        }),
        (other, _) => Box::pin(async move { Transition::to(other) }),
    };
    let transition = future.await;
    for action in &transition.actions {
        action.execute(ctx).await.expect("count");
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

    group.bench_function("hand_written_async_same_allocations", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut ctx = Counter::default();
                let mut state = Meter::Running { ticks: 0 };
                let start = Instant::now();
                for _ in 0..iters {
                    state = hand_written_async(black_box(state), black_box(Input::Tick), &mut ctx)
                        .await;
                }
                let elapsed = start.elapsed();
                assert_eq!(ctx.counted, iters);
                black_box(state);
                elapsed
            })
        })
    });

    group.bench_function("fsm_handle_and_execute", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut machine = meter();
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
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
