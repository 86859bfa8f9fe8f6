//! Cost of one drive-loop step against the bare state machine it drives.
//!
//! `raw_machine`: `handle` + `execute_actions` in a plain loop (the floor).
//! `run_transition`: `SupervisedExt::run` where each dispatch returns
//! `Transition` (dispatch, panic guard, handle, actions, yield).
//! `run_continue`: each dispatch returns `Continue` (dispatch and yield only).

use std::hint::black_box;

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troupe::fsm::{EventVariant, FsmAction, FsmError, StateMachine, StateVariant, Transition, fsm};
use troupe::ids::WriterId;
use troupe::supervise::{
    BoxError, DispatchResult, EventLoopDirective, Supervised, SupervisedExt, Supervisor,
};

const STEPS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, StateVariant)]
enum Light {
    Off,
    On,
}

#[derive(Debug, EventVariant)]
enum Press {
    Toggle,
    /// The failure event; never produced here, but every supervisor has one.
    Fail,
}

#[derive(Debug)]
struct Noop;

#[async_trait]
impl FsmAction for Noop {
    type Context = ();
    async fn execute(&self, _: &mut ()) -> Result<(), FsmError> {
        Ok(())
    }
}

fn switch(initial: Light) -> StateMachine<Light, Press, (), Noop> {
    fsm! {
        state: Light; event: Press; context: (); action: Noop; initial: initial;
        state Light::Off { on Press::Toggle => |_, _, _| Box::pin(async { Ok(Transition::to(Light::On)) }); }
        state Light::On { on Press::Toggle => |_, _, _| Box::pin(async { Ok(Transition::to(Light::Off)) }); }
        state _ { on Press::Fail => |s, _, _| { let s = s.clone(); Box::pin(async move { Ok(Transition::to(s)) }) }; }
    }
}

/// Dispatches `STEPS` times (`Transition(Toggle)` or `Continue`), then terminates.
struct Toggler {
    left: u64,
    transition: bool,
}

impl Supervisor for Toggler {
    type State = Light;
    type Event = Press;
    type Context = ();
    type Action = Noop;
    fn build_state_machine(&self, initial: Light) -> StateMachine<Light, Press, (), Noop> {
        switch(initial)
    }
    fn name(&self) -> &str {
        "toggler"
    }
}

#[async_trait]
impl Supervised for Toggler {
    async fn dispatch_state(&mut self, _: &Light, _: &mut ()) -> DispatchResult<Press> {
        if self.left == 0 {
            return Ok(EventLoopDirective::Terminate);
        }
        self.left -= 1;
        Ok(if self.transition {
            EventLoopDirective::Transition(Press::Toggle)
        } else {
            EventLoopDirective::Continue
        })
    }
    fn writer_id(&self) -> WriterId {
        WriterId::new_const(1)
    }
    async fn write_completion_event(&self) -> Result<(), BoxError> {
        Ok(())
    }
    fn event_for_action_error(&self, _msg: String) -> Press {
        Press::Fail
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("supervise_loop");
    group.throughput(Throughput::Elements(STEPS));
    group.bench_function("raw_machine", |b| {
        b.to_async(&rt).iter(|| async {
            let mut machine = switch(Light::Off);
            for _ in 0..STEPS {
                let actions = machine.handle(Press::Toggle, &mut ()).await.unwrap();
                machine.execute_actions(actions, &mut ()).await.unwrap();
            }
            black_box(machine.state().clone())
        })
    });
    for (name, transition) in [("run_transition", true), ("run_continue", false)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let toggler = Toggler {
                    left: STEPS,
                    transition,
                };
                let done = SupervisedExt::run(toggler, Light::Off, ()).await.unwrap();
                black_box(done.state)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
