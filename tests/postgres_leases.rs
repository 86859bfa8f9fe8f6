//! Run leases on a shared PostgreSQL journal, store by store: a new run is
//! its inserter's; a lapsed lease is claimed by another worker under a new
//! epoch, and every write the old owner tries after that is refused with
//! `LeaseLost` (nothing of it committed); renewals keep a lease; two
//! workers claiming at once never get the same run; a released lease is
//! claimable at once.

#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod postgres;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use troupe::records::{EventKind, NewEvent, Run, RunStatus, StoreError, TerminalEvent, WriteOp};
use troupe::store::{Fence, Ownership, PostgresConfig, PostgresStore, Store};
use uuid::Uuid;

async fn worker(schema: &postgres::Schema, name: &str) -> PostgresStore {
    PostgresStore::connect_with(
        &schema.url,
        PostgresConfig {
            worker: Some(name.to_owned()),
            lease: Duration::from_secs(30),
            ..schema.config()
        },
    )
    .await
    .expect("connect")
}

fn running(flow: &str) -> Run {
    let mut run = Run::new(flow, "work", "tests");
    run.status = RunStatus::Running;
    run
}

fn note(run_id: Uuid, what: &str) -> NewEvent {
    NewEvent::new(run_id, EventKind::custom(what, json!(null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_run_refuses_every_write_of_its_old_owner() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let a = worker(&schema, "a").await;
    let b = worker(&schema, "b").await;
    assert!(matches!(a.ownership(), Ownership::Leased { ref worker, .. } if worker == "a"));

    let run = running("orders");
    a.insert_run(run.clone(), None).await.unwrap();
    let stored = a.get_run(run.id).await.unwrap().unwrap();
    let lease = stored
        .lease
        .clone()
        .expect("a new run is leased to its inserter");
    assert_eq!((lease.owner.as_str(), lease.epoch), ("a", 1));
    a.append(note(run.id, "step-1")).await.unwrap();

    // A live lease is not claimable.
    let flows = vec!["orders".to_owned()];
    assert!(b.claim_runs(&flows, &[], 10).await.unwrap().is_empty());

    schema.lapse_leases().await;
    let doorbell = a.lease_lost().expect("a leased store has a doorbell");
    let rung = doorbell.notified();
    let claimed = b.claim_runs(&flows, &[], 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let lease = claimed[0].lease.clone().unwrap();
    assert_eq!((lease.owner.as_str(), lease.epoch), ("b", 2));

    // Every kind of owner write from `a` is refused now, and changes nothing.
    let refused = a.append(note(run.id, "step-2")).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::LeaseLost { run_id, epoch: 1, holder: Some(h) }
            if *run_id == run.id && h == "b"),
        "{refused:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), rung)
        .await
        .expect("the doorbell rang");
    let finished = TerminalEvent::RunCompleted {
        structured_output: None,
    };
    assert!(matches!(
        a.append_terminal_event_if_absent(run.id, finished.clone())
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    let mut update = stored.clone();
    update.current_step = Some("stale".into());
    assert!(matches!(
        a.update_run(update, stored.revision, EventKind::custom("x", json!(null)))
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    let renewal = a.renew_leases().await.unwrap();
    assert_eq!(renewal.lost, vec![run.id], "reported lost once");
    assert_eq!(renewal.renewed, 0);
    assert!(a.renew_leases().await.unwrap().lost.is_empty());

    // The new owner writes; the run has its one terminal event, from `b`.
    b.append(note(run.id, "step-2")).await.unwrap();
    b.append_terminal_event_if_absent(run.id, finished)
        .await
        .unwrap();
    let log = b.replay(run.id).await.unwrap();
    let kinds: Vec<&str> = log.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "step-2").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.kind.as_terminal().is_some())
            .count(),
        1
    );

    // Input from any process is not fenced.
    let entry = troupe::records::InboxEntry::new(
        run.id,
        "*",
        troupe::records::InboxMessage::Signal {
            name: "go".into(),
            payload: json!(1),
        },
    );
    let other = running("orders");
    a.insert_run(other.clone(), None).await.unwrap();
    b.accept_inbox(vec![troupe::records::InboxEntry {
        run_id: other.id,
        ..entry
    }])
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_leases_and_releases_hand_them_over_at_once() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let a = worker(&schema, "a").await;
    let b = worker(&schema, "b").await;
    let flows = vec!["orders".to_owned()];
    let (kept, released) = (running("orders"), running("orders"));
    a.insert_run(kept.clone(), None).await.unwrap();
    a.insert_run(released.clone(), None).await.unwrap();
    let mut cancelled = kept.clone();
    cancelled.cancel_requested = true;

    schema.lapse_leases().await;
    let renewal = a.renew_leases().await.unwrap();
    assert_eq!((renewal.renewed, renewal.lost.len()), (2, 0));
    assert!(
        b.claim_runs(&flows, &[], 10).await.unwrap().is_empty(),
        "renewed"
    );

    a.release_leases(&[released.id]).await.unwrap();
    let claimed = b.claim_runs(&flows, &[], 10).await.unwrap();
    assert_eq!(
        claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![released.id]
    );
    // Released is let go: a straggling write is refused.
    assert!(matches!(
        a.append(note(released.id, "late")).await,
        Err(StoreError::LeaseLost { .. })
    ));

    // A cancel written by another process is reported at the next renewal.
    let stored = b.get_run(kept.id).await.unwrap().unwrap();
    b.update_run(
        cancelled,
        stored.revision,
        EventKind::custom("cancel", json!(null)),
    )
    .await
    .unwrap();
    let renewal = a.renew_leases().await.unwrap();
    assert_eq!(renewal.cancel_requested, vec![kept.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_lapsed_unfinished_runs_of_the_named_flows_once_each() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let seed = worker(&schema, "seed").await;
    let mut ids = HashSet::new();
    for i in 0..60 {
        let run = running(if i % 10 == 0 { "other" } else { "orders" });
        if i % 10 != 0 {
            ids.insert(run.id);
        }
        seed.insert_run(run, None).await.unwrap();
    }
    let mut ended = running("orders");
    ended.status = RunStatus::Finished;
    seed.insert_run(ended.clone(), None).await.unwrap();
    schema.lapse_leases().await;

    let (a, b) = (worker(&schema, "a").await, worker(&schema, "b").await);
    let flows = vec!["orders".to_owned()];
    let claims = |store: PostgresStore| {
        let flows = flows.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_runs(&flows, &[], 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                assert!(got.len() <= 7);
                mine.extend(got.into_iter().map(|r| r.id));
            }
        })
    };
    let (ta, tb) = (claims(a), claims(b));
    let (ma, mb) = (ta.await.unwrap(), tb.await.unwrap());
    let all: Vec<Uuid> = ma.iter().chain(&mb).copied().collect();
    assert_eq!(all.len(), ids.len(), "each run claimed once");
    assert_eq!(all.into_iter().collect::<HashSet<_>>(), ids);
    assert!(!ma.is_empty() || !mb.is_empty());
}

/// Each store caches the last sequence number of the runs it wrote, to
/// number their next events without a read. Another process appending to
/// one of those runs (input it journals, a run that came back after a
/// takeover) leaves that cache behind: the next append must still commit,
/// numbered after the other process's events, and fail nothing else in
/// its batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_another_process_wrote_to_the_run_are_numbered_after_it() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let a = worker(&schema, "a").await;
    let b = worker(&schema, "b").await;
    let flows = vec!["orders".to_owned()];

    let run = running("orders");
    let bystander = running("orders");
    a.insert_run(run.clone(), None).await.unwrap();
    a.insert_run(bystander.clone(), None).await.unwrap();
    a.append(note(run.id, "a-1")).await.unwrap();
    a.append(note(bystander.id, "bystander-1")).await.unwrap();

    // Input journaled by another process (not fenced: `b` does not hold it).
    b.append(note(run.id, "input from b")).await.unwrap();
    let both = a
        .append_batch(vec![note(run.id, "a-2"), note(bystander.id, "bystander-2")])
        .await
        .expect("appends after a foreign one commit");
    assert_eq!(both.len(), 2);

    // Taken over by `b`, written to, then taken back by `a`.
    schema.lapse_leases().await;
    assert_eq!(b.claim_runs(&flows, &[], 10).await.unwrap().len(), 2);
    b.append(note(run.id, "b owns it")).await.unwrap();
    schema.lapse_leases().await;
    assert_eq!(a.claim_runs(&flows, &[], 10).await.unwrap().len(), 2);
    a.append(note(run.id, "a owns it again")).await.unwrap();

    let kinds: Vec<(u64, String)> = a
        .replay(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Custom { name, .. } => Some((e.seq, name)),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = kinds.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        ["a-1", "input from b", "a-2", "b owns it", "a owns it again"]
    );
    assert!(kinds.windows(2).all(|w| w[0].0 < w[1].0), "{kinds:?}");
}

/// An execution of a run carries its lease's epoch on each write: once the
/// store no longer holds the run at that epoch, the execution's writes are
/// refused, even after the same store holds the run again under a later
/// epoch (the old execution may still be stopping when the new one starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_an_execution_under_a_superseded_epoch_are_refused() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let a = worker(&schema, "a").await;
    let flows = vec!["orders".to_owned()];
    let run = running("orders");
    a.insert_run(run.clone(), None).await.unwrap();
    let under = |epoch: u64, ops: std::ops::Range<usize>| Fence {
        run_id: run.id,
        epoch,
        ops,
    };
    let first = a
        .apply_fenced_batch(
            vec![WriteOp::Append(note(run.id, "epoch-1"))],
            vec![under(1, 0..1)],
        )
        .await
        .unwrap();
    assert!(first[0].is_ok(), "{first:?}");

    // Let go and held again: epoch 2.
    a.release_leases(&[run.id]).await.unwrap();
    let claimed = a.claim_runs(&flows, &[], 10).await.unwrap();
    assert_eq!(claimed[0].lease.as_ref().map(|l| l.epoch), Some(2));

    // One batch: the old execution's write, an unfenced one, the new one's.
    let results = a
        .apply_fenced_batch(
            vec![
                WriteOp::Append(note(run.id, "stale")),
                WriteOp::Append(note(run.id, "unfenced")),
                WriteOp::Append(note(run.id, "epoch-2")),
            ],
            vec![under(1, 0..1), under(2, 2..3)],
        )
        .await
        .unwrap();
    assert!(
        matches!(&results[0], Err(StoreError::LeaseLost { epoch: 1, .. })),
        "{results:?}"
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    let names: Vec<String> = a
        .replay(run.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Custom { name, .. } => Some(name),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["epoch-1", "unfenced", "epoch-2"]);
}

/// The doorbell rings in every process for a child run that ended (its
/// parent's watcher, wherever it runs, reads the terminal at once) and for
/// a cancel written for a run another process holds (its owner cancels it
/// at once, not at its next renewal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doorbell_rings_for_an_ended_child_and_a_cancel_from_elsewhere() {
    let Some(url) = postgres::url() else { return };
    let schema = postgres::Schema::new(&url);
    let a = worker(&schema, "a").await;
    let b = worker(&schema, "b").await;
    let mut doorbell = a.inbox_doorbell().expect("a shared journal has a doorbell");
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), doorbell.recv())
            .await
            .expect("the doorbell rang")
            .expect("a run id")
    };
    // Listening once the resync says so.
    assert!(next().await.is_nil());

    let update = |run: &Run, audit: &str| WriteOp::UpdateRun {
        run: Box::new(run.clone()),
        expected_revision: run.revision,
        audit: EventKind::custom(audit, json!(null)),
    };
    let mut child = running("ship");
    child.parent_run_id = Some(Uuid::now_v7());
    b.insert_run(child.clone(), None).await.unwrap();
    let mut child = b.get_run(child.id).await.unwrap().unwrap();
    child.status = RunStatus::Finished;
    b.apply(update(&child, "finished")).await.unwrap();
    assert_eq!(next().await, child.id, "an ended child rings");

    let held_by_a = running("orders");
    a.insert_run(held_by_a.clone(), None).await.unwrap();
    let mut asked = b.get_run(held_by_a.id).await.unwrap().unwrap();
    asked.cancel_requested = true;
    b.apply(update(&asked, "cancel_requested")).await.unwrap();
    assert_eq!(next().await, held_by_a.id, "a cancel from elsewhere rings");
}
