//! The external-event wrapper (issue 3, "Semantics of the external-event
//! wrappers"), each mode.

mod supervise_support;

use std::time::Duration;

use supervise_support::*;
use troupe::supervise::EventLoopDirective::{Continue, Terminate, Transition};
use troupe::supervise::{
    Driver, EventLoopDirective, Supervised, SupervisedExt, WithExternalEvents,
};

/// Calls the wrapper's `dispatch_state` once in `state`.
async fn dispatch_in(
    wrapped: &mut WithExternalEvents<Sup>,
    state: St,
) -> Result<EventLoopDirective<Ev>, String> {
    directive(wrapped.dispatch_state(&state, &mut Ctx::default()).await)
}

// A dropped sender in Created (Block) yields the mapped event without calling the inner dispatch.
#[tokio::test]
async fn closed_channel_while_blocking_maps_to_its_event() {
    let script = Script::new([Step::Continue]);
    let (mut wrapped, tx, _w) = with_channel(script.clone(), St::Created);
    drop(tx);
    assert_eq!(
        dispatch_in(&mut wrapped, St::Created).await,
        Ok(Transition(Ev::ChannelClosed))
    );
    assert!(script.observed().dispatched.is_empty());
}

// A dropped sender in Running (Poll) yields the mapped event without calling the inner dispatch.
#[tokio::test]
async fn closed_channel_while_polling_maps_to_its_event() {
    let script = Script::new([Step::Continue]);
    let (mut wrapped, tx, _w) = with_channel(script.clone(), St::Created);
    drop(tx);
    assert_eq!(
        dispatch_in(&mut wrapped, St::Running).await,
        Ok(Transition(Ev::ChannelClosed))
    );
    assert!(script.observed().dispatched.is_empty());
}

// A closed channel with no mapped event (Paused blocks, maps to None) delegates.
#[tokio::test]
async fn closed_channel_without_a_mapping_delegates() {
    let script = Script::new([Step::Terminate]);
    let (mut wrapped, tx, _w) = with_channel(script.clone(), St::Created);
    drop(tx);
    assert_eq!(dispatch_in(&mut wrapped, St::Paused).await, Ok(Terminate));
    assert_eq!(script.observed().dispatched, [St::Paused]);
}

// Block waits for the next event and returns it without calling the inner dispatch.
#[tokio::test(start_paused = true)]
async fn block_waits_for_the_next_event() {
    let script = Script::new([Step::Continue]);
    let (mut wrapped, tx, _w) = with_channel(script.clone(), St::Created);
    let started = tokio::time::Instant::now();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.send(Ev::Start).await.unwrap();
        tx
    });
    assert_eq!(
        dispatch_in(&mut wrapped, St::Created).await,
        Ok(Transition(Ev::Start))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert!(script.observed().dispatched.is_empty());
    drop(sender.await.unwrap());
}

// Poll takes a ready event without calling the inner dispatch, else delegates.
#[tokio::test]
async fn poll_takes_a_ready_event_else_delegates() {
    let script = Script::new([Step::Continue]);
    let (mut wrapped, tx, _w) = with_channel(script.clone(), St::Created);
    tx.send(Ev::Pause).await.unwrap();
    assert_eq!(
        dispatch_in(&mut wrapped, St::Running).await,
        Ok(Transition(Ev::Pause))
    );
    assert!(script.observed().dispatched.is_empty());
    assert_eq!(dispatch_in(&mut wrapped, St::Running).await, Ok(Continue));
    assert_eq!(script.observed().dispatched, [St::Running]);
}

// Ignore delegates and leaves queued events queued; a later polling state gets them.
#[tokio::test]
async fn ignore_leaves_events_queued_for_a_polling_state() {
    let script = Script::new([Step::Continue, Step::Err("inner".into())]);
    let (mut wrapped, tx, _w) = with_channel(script.clone(), St::Created);
    tx.send(Ev::Cancel).await.unwrap();
    drop(tx); // closed, but the queued event is not lost
    let waiting = St::Waiting;
    assert_eq!(
        dispatch_in(&mut wrapped, waiting.clone()).await,
        Ok(Continue)
    );
    assert_eq!(
        dispatch_in(&mut wrapped, waiting.clone()).await,
        Err("inner".to_owned())
    );
    assert_eq!(script.observed().dispatched, [waiting.clone(), waiting]);
    assert_eq!(
        dispatch_in(&mut wrapped, St::Running).await,
        Ok(Transition(Ev::Cancel))
    );
    assert_eq!(
        dispatch_in(&mut wrapped, St::Running).await,
        Ok(Transition(Ev::ChannelClosed))
    );
    assert_eq!(script.observed().dispatched.len(), 2);
}

// End to end: control events drive the run and the watcher follows it.
#[tokio::test]
async fn control_events_drive_a_run() {
    let script = Script::new([Step::Terminate]);
    let (wrapped, tx, watcher) = with_channel(script.clone(), St::Created);
    let mut seen = watcher.subscribe();
    tx.send(Ev::Start).await.unwrap();
    tx.send(Ev::Finish).await.unwrap();
    let done = wrapped.run(St::Created, Ctx::default()).await.unwrap();
    assert_eq!(done.state, St::Done);
    assert_eq!(done.context.log, ["started", "finished"]);
    // Created blocked and Running polled: only Done (Ignore) reached the inner dispatch.
    assert_eq!(script.observed().dispatched, [St::Done]);
    assert_eq!(script.observed().completions, 1);
    assert!(seen.has_changed().unwrap());
    assert_eq!(*seen.borrow_and_update(), St::Done);
    drop(tx);
}

// End to end: every sender dropped before start fails the run through its mapped event.
#[tokio::test]
async fn a_closed_channel_fails_a_blocked_run() {
    let script = Script::new([Step::Terminate]);
    let (wrapped, tx, watcher) = with_channel(script.clone(), St::Created);
    drop(tx);
    let done = wrapped.run(St::Created, Ctx::default()).await.unwrap();
    let closed = St::Failed("control channel closed".into());
    assert_eq!(done.state, closed);
    assert_eq!(done.context.log, ["closed"]);
    assert_eq!(script.observed().dispatched, std::slice::from_ref(&closed));
    assert_eq!(*watcher.current(), closed);
    assert!(
        script.observed().failures.is_empty(),
        "a mapped close is an event, not a failure"
    );
}

// A resumed component (initial state differing from the watcher's) is published at start.
#[tokio::test(start_paused = true)]
async fn the_initial_state_is_published_when_it_differs() {
    let script = Script::new([Step::Hang]);
    let (wrapped, _tx, watcher) = with_channel(script, St::Created);
    let mut driver = Driver::new(wrapped, St::Paused, Ctx::default());
    let mut seen = watcher.subscribe();
    // Paused blocks on the channel; the first step publishes before it waits.
    let stepped = tokio::time::timeout(Duration::from_secs(1), driver.step()).await;
    assert!(stepped.is_err(), "a blocked step waits");
    assert!(seen.has_changed().unwrap());
    assert_eq!(*seen.borrow_and_update(), St::Paused);
}
