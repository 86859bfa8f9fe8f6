//! Workflow-style flows: steps run once each, after the steps they are
//! connected from, get those steps' outputs, restart per policy, and never
//! mix with streaming stages.

mod runtime_support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use runtime_support::*;
use serde_json::{Value, json};
use troupe::flow::{DefinitionError, FlowDefinition};
use troupe::records::RunStatus;
use troupe::stage::{StepInputs, sink_fn, source_iter, step_fn};
use troupe::store::Store;

#[tokio::test(start_paused = true)]
async fn steps_run_in_order_with_their_upstream_outputs() {
    let runtime = memory_runtime().await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let charge_attempts = Arc::new(AtomicU32::new(0));
    let log = |name: &'static str| {
        let order = order.clone();
        move |inputs: &StepInputs| {
            order
                .lock()
                .unwrap()
                .push((name, inputs.keys().cloned().collect::<Vec<_>>()));
        }
    };
    let (l1, l2, l3, l4) = (log("charge"), log("ship"), log("notify"), log("audit"));
    let attempts = charge_attempts.clone();
    runtime
        .register(
            FlowDefinition::<()>::builder("order-17")
                .step("charge", move |_| {
                    let (l1, attempts) = (l1.clone(), attempts.clone());
                    step_fn(move |inputs: StepInputs| {
                        l1(&inputs);
                        let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if attempt == 0 {
                                return Err("card processor timed out".into());
                            }
                            Ok(json!({ "charged_cents": 4_200 }))
                        }
                    })
                })
                .step("ship", move |_| {
                    let l2 = l2.clone();
                    step_fn(move |inputs: StepInputs| {
                        l2(&inputs);
                        let cents = inputs["charge"]["charged_cents"].clone();
                        async move { Ok(json!({ "tracking": "ZX-9", "for_cents": cents })) }
                    })
                })
                .step("notify", move |_| {
                    let l3 = l3.clone();
                    step_fn(move |inputs: StepInputs| {
                        l3(&inputs);
                        let tracking = inputs["ship"]["tracking"].clone();
                        async move { Ok(json!({ "sent": tracking })) }
                    })
                })
                .step("audit", move |_| {
                    let l4 = l4.clone();
                    step_fn(move |inputs: StepInputs| {
                        l4(&inputs);
                        async { Ok(Value::Null) }
                    })
                })
                .pipeline(["charge", "ship", "notify"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let run = runtime.start("order-17").await.unwrap();
    let outcome = run.wait().await.unwrap();

    assert_eq!(outcome.status, RunStatus::Finished, "{outcome:?}");
    assert_eq!(
        outcome.structured_output,
        Some(json!({ "steps": {
            "charge": { "charged_cents": 4_200 },
            "ship": { "tracking": "ZX-9", "for_cents": 4_200 },
            "notify": { "sent": "ZX-9" },
            "audit": null,
        }}))
    );
    assert_eq!(
        charge_attempts.load(Ordering::SeqCst),
        2,
        "charge was not retried"
    );
    let order = order.lock().unwrap().clone();
    let position = |name| order.iter().rposition(|(n, _)| *n == name).unwrap();
    assert!(position("charge") < position("ship") && position("ship") < position("notify"));
    assert_eq!(order[position("ship")].1, ["charge"]);
    assert_eq!(order[position("notify")].1, ["ship"]);
    assert!(order[position("audit")].1.is_empty());
    // Retried on its stage (the default retry policy): no restart.
    let failures = runtime.journal().list_failures(run.run_id()).await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(terminal_count(runtime.journal(), run.run_id()).await, 1);
}

#[tokio::test]
async fn a_step_wired_to_a_streaming_stage_is_rejected() {
    let mixed = FlowDefinition::<u64>::builder("mixed")
        .source("numbers", |_| source_iter(0..3_u64))
        .sink("discard", |_| sink_fn(|_: u64| Ok(())))
        .step("report", |_| {
            step_fn(|_: StepInputs| async { Ok(Value::Null) })
        })
        .pipeline(["numbers", "discard"])
        .edge("numbers", "report")
        .build();
    let Err(error) = mixed else {
        panic!("a step fed by a source was accepted");
    };
    assert_eq!(
        error,
        DefinitionError::StepWiredToStream {
            flow: "mixed".into(),
            from: "numbers".into(),
            to: "report".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "flow `mixed`: edge `numbers` -> `report` connects a step with a streaming stage"
    );
}
