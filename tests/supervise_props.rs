//! Property: over random sequences of dispatch outcomes, the completion is
//! written exactly once when and only when `Terminate` is reached, and every
//! failure (error, panic, FSM error) is mapped to exactly one failure event.

mod supervise_support;

use proptest::prelude::*;
use supervise_support::*;
use troupe::fsm::{EventVariant, StateVariant};
use troupe::supervise::{MAX_IDENTICAL_FAILURES, SupervisedExt, SupervisorError};

fn outcome() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Continue),
        prop_oneof![
            Just(Ev::Start),
            Just(Ev::Finish),
            Just(Ev::Pause),
            Just(Ev::Bogus)
        ]
        .prop_map(Step::Go),
        (0..3u8).prop_map(|n| Step::Err(format!("error {n}"))),
        (0..3u8).prop_map(|n| Step::Panic(format!("scripted panic {n}"))),
        Just(Step::Terminate),
    ]
}

/// What the drive loop must do with a script, worked out independently.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    terminated: bool,
    state: Option<St>,
    failures: Vec<String>,
    log: Vec<String>,
}

/// The test machine's transitions for the events the strategy produces.
fn next_state(state: &St, event: &Ev) -> Option<(St, Option<&'static str>)> {
    match (state, event) {
        (St::Created, Ev::Start) => Some((St::Running, Some("started"))),
        (St::Paused, Ev::Start) => Some((St::Running, None)),
        (St::Running, Ev::Finish) => Some((St::Done, Some("finished"))),
        (St::Running, Ev::Pause) => Some((St::Paused, None)),
        _ => None,
    }
}

fn model(steps: &[Step]) -> Expected {
    let mut state = St::Created;
    let mut expected = Expected::default();
    let mut streak: Option<(String, St, u32)> = None;
    let exhausted = std::iter::repeat(Step::Err("exhausted".into()));
    for step in steps.iter().cloned().chain(exhausted) {
        let failure = match step {
            Step::Continue => None,
            Step::Terminate => {
                expected.terminated = true;
                break;
            }
            Step::Err(message) => Some(message),
            Step::Panic(message) => Some(format!(
                "dispatch_state panicked in state `{}`: {message}",
                state.variant_name()
            )),
            Step::Go(event) => match next_state(&state, &event) {
                Some((next, action)) => {
                    state = next;
                    expected.log.extend(action.map(str::to_owned));
                    None
                }
                None => Some(format!(
                    "no handler for event `{}` in state `{}`",
                    event.variant_name(),
                    state.variant_name()
                )),
            },
            Step::Hang => unreachable!("not generated"),
        };
        let Some(failure) = failure else {
            streak = None;
            continue;
        };
        let count = match &streak {
            Some((m, s, n)) if *m == failure && *s == state => n + 1,
            _ => 1,
        };
        if count > MAX_IDENTICAL_FAILURES {
            break;
        }
        streak = Some((failure.clone(), state.clone(), count));
        expected.log.push(format!("failure: {failure}"));
        expected.failures.push(failure.clone());
        state = St::Failed(failure);
    }
    expected.state = Some(state);
    expected
}

async fn check(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let expected = model(&steps);
    let mut script = Script::new(steps);
    script.when_done = Step::Err("exhausted".into());
    let result = Sup(script.clone()).run(St::Created, Ctx::default()).await;
    let observed = script.observed();
    prop_assert_eq!(observed.completions, usize::from(expected.terminated));
    prop_assert_eq!(&observed.failures, &expected.failures);
    match result {
        Ok(done) => {
            prop_assert!(expected.terminated);
            prop_assert_eq!(Some(done.state), expected.state);
            prop_assert_eq!(done.context.log, expected.log);
        }
        Err(SupervisorError::RepeatedFailure { count, .. }) => {
            prop_assert!(!expected.terminated);
            prop_assert_eq!(count, MAX_IDENTICAL_FAILURES);
        }
        Err(other) => prop_assert!(false, "unexpected error: {other}"),
    }
    Ok(())
}

/// Scripted panics are expected here; keep them out of the test output.
fn quiet_scripted_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("scripted panic"));
            if !scripted {
                default(info);
            }
        }));
    });
}

proptest! {
    #[test]
    fn completion_once_iff_terminated_and_no_failure_unmapped(steps in prop::collection::vec(outcome(), 0..40)) {
        quiet_scripted_panics();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(check(steps))?;
    }
}

#[test]
fn the_model_stops_a_stuck_script_at_the_bound() {
    let expected = model(&[Step::Go(Ev::Bogus)]);
    assert!(!expected.terminated);
    // The Bogus failure; the first "exhausted" (in the Bogus failure's state);
    // then the bound's worth of "exhausted" in `Failed("exhausted")`.
    assert_eq!(expected.failures.len(), 2 + MAX_IDENTICAL_FAILURES as usize);
    assert_eq!(expected.state, Some(St::Failed("exhausted".into())));
}
