//! Unit tests of `ports.rs`: sends cut short, gone downstreams, counts.
use super::*;
use crate::stage::pipe::{PipeConfig, pipe};

use crate::stage::pipe::PipeReceiver;

fn ports_to(batch_size: usize, outputs: usize) -> (Ports<u32>, Vec<PipeReceiver<u32>>) {
    let (senders, receivers) = (0..outputs)
        .map(|_| {
            pipe(PipeConfig {
                batch_size,
                capacity: 4,
            })
        })
        .unzip();
    (
        Ports::new(None, senders, 16, unserializable::<u32>),
        receivers,
    )
}

#[tokio::test]
async fn items_lost_to_a_gone_downstream_are_not_counted_as_sent() {
    let (mut ports, mut receivers) = ports_to(2, 1);
    ports.outbox.push(1);
    ports.send_outbox().await.unwrap();
    assert_eq!(ports.items_out, 1);
    assert_eq!(receivers[0].recv_batch().await, Some(vec![1]));

    receivers[0].close();
    // 2 and 3 fill a batch the closed pipe refuses; 4 never leaves the outbox.
    for item in [2, 3, 4] {
        ports.outbox.push(item);
    }
    let gone = ports.send_outbox().await.unwrap_err();
    assert_eq!(gone, DownstreamGone { undelivered: 3 });
    assert_eq!(ports.items_out, 1);
}

#[tokio::test]
async fn a_gone_first_output_counts_what_it_refused_and_what_waits() {
    let (mut ports, mut receivers) = ports_to(2, 2);
    receivers[0].close();
    for item in [1, 2, 3] {
        ports.outbox.push(item);
    }
    // Output 0 refuses the run [1, 2] before output 1 takes it: all
    // three wait in the outbox, and none counts as sent.
    let gone = ports.send_outbox().await.unwrap_err();
    assert_eq!(gone, DownstreamGone { undelivered: 3 });
    assert_eq!(ports.outbox.len(), 3);
    assert_eq!(ports.items_out, 0);
    // A send resumed goes on with output 1 and the same run; output 0
    // then refuses 3 at the final flush.
    let gone = ports.send_outbox().await.unwrap_err();
    assert_eq!(gone, DownstreamGone { undelivered: 1 });
    assert_eq!(ports.items_out, 3);
    assert_eq!(receivers[1].recv_batch().await, Some(vec![1, 2]));
}

#[tokio::test(start_paused = true)]
async fn sends_cut_short_and_resumed_deliver_every_item_once_in_order() {
    let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..2)
        .map(|_| {
            pipe(PipeConfig {
                batch_size: 2,
                capacity: 1,
            })
        })
        .unzip();
    let mut ports = Ports::new(None, senders, 16, unserializable::<u32>);
    for item in 1..=7 {
        ports.outbox.push(item);
    }
    let mut got = vec![Vec::new(), Vec::new()];
    let wait = std::time::Duration::from_secs(1);
    // Full pipes cut each send short; taking a batch from each makes room.
    while tokio::time::timeout(wait, ports.send_outbox())
        .await
        .is_err()
    {
        for (rx, got) in receivers.iter_mut().zip(&mut got) {
            if let Ok(Some(batch)) = tokio::time::timeout(wait, rx.recv_batch()).await {
                got.extend(batch);
            }
        }
    }
    assert!(ports.outbox.is_empty());
    assert_eq!(ports.items_out, 7);
    let finish = tokio::spawn(async move { ports.finish_outputs().await });
    for (rx, got) in receivers.iter_mut().zip(&mut got) {
        while let Some(batch) = rx.recv_batch().await {
            got.extend(batch);
        }
    }
    finish.await.unwrap().unwrap();
    assert_eq!(got, [(1..=7).collect::<Vec<_>>(), (1..=7).collect()]);
}

#[tokio::test]
async fn finishing_into_a_gone_last_output_takes_its_items_back_out() {
    let (mut ports, mut receivers) = ports_to(8, 2);
    ports.outbox.push(5);
    // A partial batch stays buffered when the send is cut short after
    // the items were handed over (as a drain does): simulated by
    // pushing to the outputs directly.
    let item = ports.outbox.items_mut().remove(0);
    ports.outputs[0].push(item);
    ports.outputs[1].push(item);
    ports.items_out += 1;
    receivers[1].close();
    let gone = ports.finish_outputs().await.unwrap_err();
    assert_eq!(gone, DownstreamGone { undelivered: 1 });
    assert_eq!(ports.items_out, 0);
    assert_eq!(receivers[0].recv_batch().await, Some(vec![5]));
}

#[tokio::test]
async fn a_failed_finish_keeps_the_outputs_it_did_not_reach() {
    let (mut ports, mut receivers) = ports_to(8, 3);
    receivers[0].close();
    ports.outputs[0].push(1);
    let gone = ports.finish_outputs().await.unwrap_err();
    assert_eq!(gone, DownstreamGone { undelivered: 1 });
    assert_eq!(ports.outputs.len(), 2);
    ports.finish_outputs().await.unwrap();
    assert_eq!(receivers[1].recv_batch().await, None);
    assert_eq!(receivers[2].recv_batch().await, None);
}

#[tokio::test]
async fn a_partial_batch_refused_at_the_end_is_not_counted_either() {
    let (mut ports, mut receivers) = ports_to(8, 2);
    receivers[1].close();
    ports.outbox.push(7);
    let gone = ports.send_outbox().await.unwrap_err();
    assert_eq!(gone, DownstreamGone { undelivered: 1 });
    assert_eq!(ports.items_out, 0);
    // The first output took its copy.
    assert_eq!(receivers[0].recv_batch().await, Some(vec![7]));
}
