//! A synchronous handler with a synchronous action handles an event without
//! allocating: 1,000 events through `handle_now` + `execute_now`, and 1,000
//! through `handle` (its future polled once, never boxed) + `execute_actions`,
//! each count zero allocations. A counting global allocator; no test
//! harness (`harness = false`), so no other thread allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use troupe::fsm::{
    EventVariant, FsmAction, FsmContext, FsmError, StateMachine, StateVariant, Transition, fsm,
};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

#[derive(Debug, Clone, Copy, PartialEq, StateVariant)]
enum Meter {
    Idle,
    Running { ticks: u64 },
}

#[derive(Debug, Clone, Copy, EventVariant)]
enum Input {
    Start,
    Tick,
}

#[derive(Default)]
struct Counter {
    counted: u64,
}
impl FsmContext for Counter {}

/// Zero-sized and answered in `execute_now`.
struct Count;

#[async_trait]
impl FsmAction for Count {
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

fn meter() -> StateMachine<Meter, Input, Counter, Count> {
    fsm! {
        state: Meter; event: Input; context: Counter; action: Count; initial: Meter::Idle;
        state Meter::Idle {
            on Input::Start => sync |_, _, _| Transition::to(Meter::Running { ticks: 0 });
        }
        state Meter::Running {
            on Input::Tick => sync |s, _, _| {
                let Meter::Running { ticks } = *s else { unreachable!() };
                Transition::to(Meter::Running { ticks: ticks + 1 }).with_action(Count)
            };
        }
    }
}

/// Polls `future` once: a sync handler's `handle` completes at once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a synchronous handler's future is ready at once"),
    }
}

fn main() {
    let mut machine = meter();
    let mut ctx = Counter::default();
    machine
        .handle_now(&Input::Start, &mut ctx)
        .expect("sync")
        .expect("start");

    let now = allocations_in(|| {
        for _ in 0..1_000 {
            let actions = machine
                .handle_now(&Input::Tick, &mut ctx)
                .expect("sync")
                .expect("tick");
            for action in &actions {
                action.execute_now(&mut ctx).expect("now").expect("count");
            }
        }
    });
    assert_eq!(machine.state(), &Meter::Running { ticks: 1_000 });
    assert_eq!(ctx.counted, 1_000);
    assert_eq!(
        now, 0,
        "handle_now + execute_now allocated {now} time(s) in 1,000 events"
    );

    let awaited = allocations_in(|| {
        for _ in 0..1_000 {
            let actions = ready(machine.handle(Input::Tick, &mut ctx)).expect("tick");
            ready(machine.execute_actions(actions, &mut ctx)).expect("count");
        }
    });
    assert_eq!(machine.state(), &Meter::Running { ticks: 2_000 });
    assert_eq!(ctx.counted, 2_000);
    assert_eq!(
        awaited, 0,
        "handle + execute_actions allocated {awaited} time(s) in 1,000 events"
    );

    // The counter counts: an async handler's boxed future is seen.
    let mut boxed: StateMachine<Meter, Input, Counter, Count> = fsm! {
        state: Meter; event: Input; context: Counter; action: Count; initial: Meter::Idle;
        state Meter::Idle { on Input::Tick => |_, _, _| Box::pin(async { Ok(Transition::to(Meter::Idle)) }); }
    };
    let control = allocations_in(|| {
        ready(boxed.handle(Input::Tick, &mut ctx)).expect("tick");
    });
    assert_eq!(control, 1, "the async handler's future is one allocation");
    println!("fsm_no_alloc: 0 allocations in 2 x 1,000 synchronous events (control: {control})");
}
