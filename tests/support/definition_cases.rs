//! Conformance cases for flow definitions: recorded once per (name,
//! fingerprint), the first record kept, listed by name then recording
//! order with their shape intact; bad records refused, changing nothing;
//! a run's fingerprint and version round-trip and are fixed at insert.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use troupe::records::{
    DefinedEdge, DefinedStage, DefinitionRecord, EventKind, FlowShape, Run, StoreError, WriteOp,
};

use super::conformance::AnyStore;

/// 2026-01-01T00:00:00.123456Z plus `secs` seconds (microseconds, as stores keep them).
fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_767_225_600_123_456).expect("time") + TimeDelta::seconds(secs)
}

fn shape(stages: &[(&str, &str)]) -> FlowShape {
    FlowShape {
        stages: stages
            .iter()
            .map(|(name, kind)| DefinedStage {
                name: (*name).into(),
                kind: (*kind).into(),
                events: (*kind == "transform").then(|| "my::Approval".into()),
                machine: (*kind == "step").then(|| "ab".repeat(32)),
            })
            .collect(),
        edges: stages
            .windows(2)
            .map(|w| DefinedEdge {
                from: w[0].0.into(),
                to: w[1].0.into(),
            })
            .collect(),
        input: Some("my::Order".into()),
    }
}

fn record(name: &str, version: Option<u32>, shape: FlowShape, secs: i64) -> DefinitionRecord {
    DefinitionRecord {
        registered_at: at(secs),
        ..DefinitionRecord::new(name, version, shape)
    }
}

pub async fn definitions_are_recorded_once_per_fingerprint(store: AnyStore) {
    let v1 = record(
        "orders",
        Some(1),
        shape(&[("a", "source"), ("b", "sink")]),
        0,
    );
    let v2 = record(
        "orders",
        Some(2),
        shape(&[("a", "source"), ("t", "transform"), ("b", "sink")]),
        1,
    );
    let other = record("billing", None, shape(&[("charge", "step")]), 2);
    assert!(store.record_definition(v1.clone()).await.unwrap());
    let again = DefinitionRecord {
        registered_at: at(10),
        ..v1.clone()
    };
    assert!(
        !store.record_definition(again).await.unwrap(),
        "the same fingerprint is recorded once"
    );
    assert!(store.record_definition(v2.clone()).await.unwrap());
    assert!(store.record_definition(other.clone()).await.unwrap());
    assert_eq!(
        store.list_definitions(None).await.unwrap(),
        [other.clone(), v1.clone(), v2.clone()],
        "by name, then recording order; the first record kept"
    );
    assert_eq!(
        store.list_definitions(Some("orders")).await.unwrap(),
        [v1, v2]
    );
    assert!(
        store
            .list_definitions(Some("none"))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn definitions_refuse_bad_records(store: AnyStore) {
    let good = record("orders", None, shape(&[("a", "step")]), 0);
    let mut empty = good.clone();
    empty.name.clear();
    let mut fingerprint = good.clone();
    fingerprint.fingerprint = "not hex".into();
    let mut nul = good.clone();
    nul.shape.stages[0].name = "a\0b".into();
    for bad in [empty, fingerprint, nul] {
        let error = store.record_definition(bad).await.unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidDefinition { .. }),
            "{error:?}"
        );
    }
    // In an atomic op it takes the others down with it.
    let run = Run::new("ctrl", "goal", "o");
    let mut bad = good.clone();
    bad.fingerprint.clear();
    let atomic = WriteOp::Atomic(vec![
        WriteOp::InsertRun {
            run: Box::new(run.clone()),
            audit: None,
        },
        WriteOp::RecordDefinition(Box::new(bad)),
    ]);
    assert!(store.apply(atomic).await.is_err());
    assert_eq!(store.get_run(run.id).await.unwrap(), None);
    assert!(store.list_definitions(None).await.unwrap().is_empty());
}

pub async fn runs_record_their_fingerprint(store: AnyStore) {
    let definition = record("orders", Some(7), shape(&[("a", "step")]), 0);
    let mut run = Run::new("orders", "goal", "o");
    run.fingerprint = Some(definition.fingerprint.clone());
    run.flow_version = Some(7);
    store
        .insert_run(run.clone(), Some(EventKind::custom("created", Value::Null)))
        .await
        .unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.fingerprint, run.fingerprint);
    assert_eq!(stored.flow_version, Some(7));
    let mut changed = stored.clone();
    changed.fingerprint = Some("f".repeat(64));
    changed.flow_version = None;
    changed.goal = "changed".into();
    store
        .update_run(
            changed,
            stored.revision,
            EventKind::custom("x", Value::Null),
        )
        .await
        .unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.goal, "changed");
    assert_eq!(
        (stored.fingerprint, stored.flow_version),
        (run.fingerprint, Some(7)),
        "fixed at insert"
    );
    let plain = Run::new("orders", "goal", "o");
    store.insert_run(plain.clone(), None).await.unwrap();
    let plain = store.get_run(plain.id).await.unwrap().unwrap();
    assert_eq!((plain.fingerprint, plain.flow_version), (None, None));
}
