//! Behaviour tests of the run control plane (`troupe::runs::RunManager`),
//! each run over a `MemoryStore`, an in-memory `SqliteStore` and a journal
//! actor's handle.

#[path = "support/backends.rs"]
#[macro_use]
mod backends;
#[path = "support/manager_cases.rs"]
mod manager_cases;
#[path = "support/manager_write_cases.rs"]
mod manager_write_cases;
#[path = "support/rival.rs"]
mod rival;
#[path = "support/run_model.rs"]
mod run_model;

mod lifecycle {
    over_backends!(#[tokio::test] manager_cases;
        create_managed_is_created_at_revision_zero,
        runs_are_listed_by_owner_and_status,
        each_change_adds_one_revision_and_one_audit_event,
        moves_follow_the_legal_move_table,
        terminal_runs_refuse_every_change,
        cancel_request_blocks_finish_and_update_state,
        state_patches_merge_shallowly,
        set_waiting_records_what_the_run_waits_for,
        fail_records_the_failure_in_the_state,
        finish_merges_the_final_state_and_records_completion,
        terminal_moves_record_the_outcome_exactly_once,
    );
}

mod writes {
    over_backends!(#[tokio::test] manager_write_cases;
        revision_conflicts_are_retried,
        a_retry_rechecks_the_rules,
        persistent_conflicts_surface_revision_mismatch,
        store_failures_are_reported_not_retried,
        unknown_runs_are_not_found,
        invalid_input_is_invalid_data,
        create_mirrored_is_created_and_started,
        step_observations_upsert_by_external_run_id,
        step_observation_for_unknown_run_is_not_found,
        step_observations_on_a_terminal_run_leave_the_run_alone,
    );
}
