//! Property test: random sequences of `RunManager` calls on one run agree,
//! call by call, with a small reference model of the run's rules.

// Only the stores are used here, not the per-backend test macro.
#[allow(unused_macros)]
#[path = "support/backends.rs"]
mod backends;
#[path = "support/run_model.rs"]
mod run_model;

use proptest::prelude::*;
use serde_json::json;
use troupe::runs::{CreateManagedInput, RunManager};

use backends::AnyStore;
use run_model::{Model, Move, without_failure_time};

fn moves() -> impl Strategy<Value = Vec<Move>> {
    prop::collection::vec(prop::sample::select(Move::ALL.to_vec()), 1..24)
}

/// Plays `moves` on a new run and checks every result and the run after it.
async fn agree_with_model(store: AnyStore, moves: Vec<Move>) -> Result<(), TestCaseError> {
    let m = RunManager::new(store);
    let input = CreateManagedInput {
        state_json: json!({"start": true}),
        ..CreateManagedInput::new("ctrl", "goal", "owner")
    };
    let id = m.create_managed(input).await.unwrap().id;
    let mut model = Model::created(json!({"start": true}));
    for (n, mv) in moves.into_iter().enumerate() {
        let n = n as u64;
        let revision = model.revision;
        let expected = model.step(mv, n);
        let got = mv.apply(&m, id, n).await;
        match (&expected, &got) {
            (Ok(()), Ok(())) => {}
            (Err(refusal), Err(e)) => {
                prop_assert!(refusal.matches(e), "{mv:?}: {refusal:?} vs {e}")
            }
            _ => prop_assert!(false, "{mv:?} #{n}: model {expected:?}, manager {got:?}"),
        }
        let run = m.get(id).await.unwrap().unwrap();
        prop_assert_eq!(run.status, model.status);
        prop_assert_eq!(run.revision, model.revision);
        prop_assert_eq!(run.cancel_requested, model.cancel_requested);
        prop_assert_eq!(&run.current_step, &model.current_step);
        prop_assert_eq!(without_failure_time(&run.state_json), model.state.clone());
        let log = m.list_events(id, usize::MAX).await.unwrap();
        let outcomes: Vec<&str> = log
            .iter()
            .filter_map(|e| e.kind.as_terminal().map(|t| t.name()))
            .collect();
        prop_assert_eq!(outcomes, model.outcome.into_iter().collect::<Vec<_>>());
        prop_assert_eq!(
            log.len(),
            model.audit_events + usize::from(model.outcome.is_some())
        );
        if model.revision > revision {
            let audit = log
                .iter()
                .rfind(|e| e.kind.as_terminal().is_none())
                .unwrap();
            prop_assert_eq!(audit.kind.name(), mv.audit_kind());
        }
    }
    Ok(())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn memory_store_agrees_with_the_model(moves in moves()) {
        block_on(async { agree_with_model(backends::memory().await, moves).await })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn sqlite_store_agrees_with_the_model(moves in moves()) {
        block_on(async { agree_with_model(backends::sqlite().await, moves).await })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn journal_handle_agrees_with_the_model(moves in moves()) {
        block_on(async { agree_with_model(backends::journal().await, moves).await })?;
    }
}
