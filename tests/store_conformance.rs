//! Runs the conformance suite against every backend.

#[path = "support/chain_cases.rs"]
mod chain_cases;
#[path = "support/checkpoint_cases.rs"]
mod checkpoint_cases;
#[path = "support/conformance.rs"]
mod conformance;
#[path = "support/definition_cases.rs"]
mod definition_cases;
#[path = "support/key_cases.rs"]
mod key_cases;
#[path = "support/list_cases.rs"]
mod list_cases;
#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/repair_cases.rs"]
mod repair_cases;
#[path = "support/required_only.rs"]
mod required_only;

use std::sync::Arc;

use troupe::journal::{JournalConfig, JournalHandle};
use troupe::store::{MemoryStore, SqliteStore};

/// What a backend's `$make` block yields: `(store, guard)`, or `None` when
/// the backend is not available here (the test is then skipped, loudly).
trait Backend {
    fn get(self) -> Option<(conformance::AnyStore, Box<dyn std::any::Any>)>;
}

impl<G: 'static> Backend for (conformance::AnyStore, G) {
    fn get(self) -> Option<(conformance::AnyStore, Box<dyn std::any::Any>)> {
        Some((self.0, Box::new(self.1)))
    }
}

impl<G: 'static> Backend for Option<(conformance::AnyStore, G)> {
    fn get(self) -> Option<(conformance::AnyStore, Box<dyn std::any::Any>)> {
        self.and_then(Backend::get)
    }
}

/// Instantiates one `#[tokio::test]` per conformance case for a backend.
/// `$make` is an async block yielding `(Store, guard)` (or an `Option` of
/// one, see [`Backend`]); the guard keeps temporary files or schemas alive
/// for the test's duration.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@cases $make;
                ordering_and_cursors,
                list_events_returns_most_recent,
                caller_event_ids_are_idempotent,
                one_terminal_event_per_run,
                terminal_payloads_round_trip,
                cas_update_appends_one_audit_event,
                runs_are_unique_and_listed,
                append_batch_is_atomic,
                batch_results_are_per_request,
                outputs_failures_and_steps,
                step_outputs_of_many_runs,
                lists_runs_missing_terminal_event,
                lists_runs_to_recover,
                recovery_scan_follows_every_outcome_write,
                too_deep_json_is_refused_at_write,
                revision_overflow_is_refused,
                dead_letters_round_trip_in_order,
                dead_letter_for_unknown_run_is_refused,
                inbox_round_trips_in_accept_order,
                inbox_accept_is_all_or_none,
                inbox_refuses_ended_runs,
                inbox_settles_once,
                runs_with_unsettled_inbox_are_found_in_one_call,
                inbox_refuses_too_deep_payload,
            );
            conformance!(@list $make; runs_are_listed_newest_first_by_page);
            conformance!(@chain $make;
                continue_as_new_is_one_write,
                a_failed_continue_leaves_neither,
                a_run_continues_once,
                a_continued_run_without_its_outcome_is_listed_for_repair,
            );
            conformance!(@checkpoints $make;
                checkpoints_keep_the_greatest_id,
                checkpoint_states_round_trip,
                checkpoints_refuse_unknown_and_ended_runs,
                checkpoints_refuse_bad_input,
                checkpoint_batches_are_all_or_none,
                checkpoints_of_many_runs_read_in_one_call,
            );
            conformance!(@definitions $make;
                definitions_are_recorded_once_per_fingerprint,
                definitions_refuse_bad_records,
                runs_record_their_fingerprint,
            );
            conformance!(@keys $make;
                run_input_round_trips_and_is_fixed,
                run_key_is_unique_among_runs_not_ended,
                run_key_refusal_fails_its_op_alone,
                bad_run_keys_are_refused,
                memos_keep_the_first_result_per_key,
                memos_refuse_bad_input,
            );
            conformance!(@repair $make;
                record_appends_once,
                record_failure_goes_to_ledger,
                repair_noop_when_not_terminal,
                repair_completed_uses_requested_output,
                repair_completed_rebuilds_output,
                repair_completed_without_outputs_has_no_output,
                repair_failed_reason_precedence,
                repair_cancelled_status_wins_and_is_idempotent,
                recovery_scan_repairs_and_reports,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                conformance::$case(store).await;
            }
        )*
    };
    (@list $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                list_cases::$case(store).await;
            }
        )*
    };
    (@chain $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                chain_cases::$case(store).await;
            }
        )*
    };
    (@checkpoints $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                checkpoint_cases::$case(store).await;
            }
        )*
    };
    (@definitions $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                definition_cases::$case(store).await;
            }
        )*
    };
    (@keys $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                key_cases::$case(store).await;
            }
        )*
    };
    (@repair $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some((store, _guard)) = Backend::get($make.await) else {
                    return;
                };
                repair_cases::$case(store).await;
            }
        )*
    };
}

conformance!(journal_over_sqlite, async {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("journal.sqlite"))
            .await
            .unwrap(),
    );
    let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
        .await
        .unwrap();
    let store: conformance::AnyStore = Arc::new(journal);
    (store, dir)
});

conformance!(journal_over_memory, async {
    let journal =
        JournalHandle::spawn(Arc::new(MemoryStore::new()), JournalConfig::default(), None)
            .await
            .unwrap();
    let store: conformance::AnyStore = Arc::new(journal);
    (store, ())
});

conformance!(memory, async {
    let store: conformance::AnyStore = Arc::new(MemoryStore::new());
    (store, ())
});

conformance!(sqlite_in_memory, async {
    let store: conformance::AnyStore = Arc::new(SqliteStore::open(":memory:").await.unwrap());
    (store, ())
});

conformance!(sqlite_file, async {
    let dir = tempfile::tempdir().unwrap();
    let store: conformance::AnyStore = Arc::new(
        SqliteStore::open(dir.path().join("journal.sqlite"))
            .await
            .unwrap(),
    );
    (store, dir)
});

// The trait's provided methods over a backend (run-by-run batched reads).
conformance!(provided_methods_over_sqlite, async {
    let store: conformance::AnyStore = Arc::new(required_only::RequiredOnly(Arc::new(
        SqliteStore::open(":memory:").await.unwrap(),
    )));
    (store, ())
});

#[cfg(feature = "postgres")]
conformance!(postgres_store, async {
    let url = postgres::url()?;
    let schema = postgres::Schema::new(&url);
    let store: conformance::AnyStore = Arc::new(schema.store().await);
    Some((store, schema))
});

#[cfg(feature = "postgres")]
conformance!(journal_over_postgres, async {
    let url = postgres::url()?;
    let schema = postgres::Schema::new(&url);
    let store = Arc::new(schema.store().await);
    let journal = JournalHandle::spawn(store, JournalConfig::default(), None)
        .await
        .unwrap();
    let store: conformance::AnyStore = Arc::new(journal);
    Some((store, schema))
});
