//! Property: whatever the pipe sizes, chain length and item count, a
//! pipeline delivers every item once, in order, and records exactly one
//! outcome with counts that add up.

mod runtime_support;

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use runtime_support::*;
use troupe::flow::FlowDefinition;
use troupe::records::RunStatus;
use troupe::stage::PipeConfig;
use troupe::stage::{Emitter, sink_fn, source_iter, transform_fn};

fn run_case(items: u64, transforms: usize, pipes: PipeConfig) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let runtime = memory_runtime().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let mut builder = FlowDefinition::<u64>::builder("chain")
            .source("source", move |_| source_iter(0..items))
            .pipes(pipes);
        let mut names = vec!["source".to_owned()];
        for i in 0..transforms {
            let name = format!("t{i}");
            builder = builder.transform(name.clone(), |_| {
                transform_fn(|x: u64, out: &mut Emitter<u64>| {
                    out.push(x + 1);
                    Ok(())
                })
            });
            names.push(name);
        }
        names.push("sink".to_owned());
        let definition = builder
            .sink("sink", move |_| {
                let seen = sink_seen.clone();
                sink_fn(move |x: u64| {
                    seen.lock().map_err(|_| "poisoned")?.push(x);
                    Ok(())
                })
            })
            .pipeline(names)
            .build()
            .expect("valid chain");
        runtime.register(definition).await.expect("register");
        let run = runtime.start("chain").await.expect("start");
        let outcome = run.wait().await.expect("outcome");
        prop_assert_eq!(outcome.status, RunStatus::Finished);
        let expected: Vec<u64> = (0..items).map(|x| x + transforms as u64).collect();
        prop_assert_eq!(&*seen.lock().unwrap(), &expected);
        let steps = &outcome.structured_output.unwrap()["steps"];
        prop_assert_eq!(&steps["source"]["items_out"], items);
        prop_assert_eq!(&steps["sink"]["items_in"], items);
        prop_assert_eq!(terminal_count(runtime.journal(), run.run_id()).await, 1);
        runtime.shutdown().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_item_arrives_once_in_order(
        items in 0_u64..600,
        transforms in 0_usize..4,
        batch_size in 1_usize..40,
        capacity in 1_usize..4,
    ) {
        run_case(items, transforms, PipeConfig { batch_size, capacity })?;
    }
}
