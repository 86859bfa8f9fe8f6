//! The control channel into a component and the watch on its state.

use std::fmt;
use std::marker::PhantomData;

use tokio::sync::{mpsc, watch};

/// Default capacity of a control channel: control events are rare, a small
/// bound keeps a flood of them from growing memory while still absorbing bursts.
pub const DEFAULT_CONTROL_CAPACITY: usize = 32;

/// Builds the three ends of a component's control plumbing: a sender of
/// external events, the receiver the component's wrapper reads, and the
/// watcher of its state.
///
/// ```
/// use troupe::supervise::ChannelBuilder;
/// let (sender, receiver, watcher) = ChannelBuilder::<u32, &str>::new().capacity(4).build("Created");
/// assert_eq!(*watcher.current(), "Created");
/// # drop((sender, receiver));
/// ```
pub struct ChannelBuilder<E, S> {
    capacity: usize,
    _types: PhantomData<fn(E, S)>,
}

impl<E, S> ChannelBuilder<E, S> {
    /// A builder with [`DEFAULT_CONTROL_CAPACITY`].
    pub fn new() -> Self {
        ChannelBuilder {
            capacity: DEFAULT_CONTROL_CAPACITY,
            _types: PhantomData,
        }
    }

    /// How many events may wait in the channel before `send` waits (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The sender, receiver and state watcher; the watcher starts at `initial_state`.
    pub fn build(
        self,
        initial_state: S,
    ) -> (
        ExternalEventSender<E>,
        ExternalEventReceiver<E>,
        StateWatcher<S>,
    ) {
        let (tx, rx) = mpsc::channel(self.capacity);
        let (state_tx, _) = watch::channel(initial_state);
        (
            ExternalEventSender { inner: tx },
            ExternalEventReceiver { inner: rx },
            StateWatcher { inner: state_tx },
        )
    }
}

impl<E, S> Default for ChannelBuilder<E, S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E, S> fmt::Debug for ChannelBuilder<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Sends external (control) events to a component. Cheap to clone; when every
/// clone is dropped the component sees the channel as closed.
pub struct ExternalEventSender<E> {
    inner: mpsc::Sender<E>,
}

impl<E> Clone for ExternalEventSender<E> {
    fn clone(&self) -> Self {
        ExternalEventSender {
            inner: self.inner.clone(),
        }
    }
}

impl<E> fmt::Debug for ExternalEventSender<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalEventSender")
            .field("closed", &self.inner.is_closed())
            .finish()
    }
}

/// The component no longer receives external events (its receiver was
/// dropped); the event is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the component's control channel is closed; the external event was not delivered")]
pub struct ExternalEventSendError<E>(pub E);

impl<E> ExternalEventSender<E> {
    /// Queues `event`, waiting while the channel is full.
    pub async fn send(&self, event: E) -> Result<(), ExternalEventSendError<E>> {
        self.inner
            .send(event)
            .await
            .map_err(|mpsc::error::SendError(e)| ExternalEventSendError(e))
    }

    /// Whether the component's receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// How many more events fit before [`send`](Self::send) would wait: a
    /// host that must never block on a busy component checks it first.
    pub fn free_slots(&self) -> usize {
        self.inner.capacity()
    }
}

/// The receiving end, handed to a `*WithExternalEvents` wrapper. Events sent
/// before every sender was dropped are still delivered, in order.
pub struct ExternalEventReceiver<E> {
    inner: mpsc::Receiver<E>,
}

/// What a non-waiting look at the control channel finds.
pub(crate) enum Polled<E> {
    Event(E),
    Empty,
    Closed,
}

impl<E> ExternalEventReceiver<E> {
    /// The next event, or `None` once the channel is closed and drained.
    pub(crate) async fn next(&mut self) -> Option<E> {
        self.inner.recv().await
    }

    /// The next event if one is queued, without waiting.
    pub(crate) fn poll_now(&mut self) -> Polled<E> {
        match self.inner.try_recv() {
            Ok(event) => Polled::Event(event),
            Err(mpsc::error::TryRecvError::Empty) => Polled::Empty,
            Err(mpsc::error::TryRecvError::Disconnected) => Polled::Closed,
        }
    }

    /// How many events are queued.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl<E> fmt::Debug for ExternalEventReceiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalEventReceiver")
            .field("queued", &self.inner.len())
            .finish()
    }
}

/// Observes a component's current state. Clone it to hand out; only the
/// drive loop publishes (once per actual change, compared with `PartialEq`).
pub struct StateWatcher<S> {
    inner: watch::Sender<S>,
}

impl<S> Clone for StateWatcher<S> {
    fn clone(&self) -> Self {
        StateWatcher {
            inner: self.inner.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for StateWatcher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateWatcher")
            .field("current", &*self.inner.borrow())
            .finish()
    }
}

impl<S> StateWatcher<S> {
    /// The latest published state. Holds a read lock on the value: keep the
    /// guard short and never across an `.await`.
    pub fn current(&self) -> watch::Ref<'_, S> {
        self.inner.borrow()
    }

    /// A `watch` receiver that wakes on each published change.
    pub fn subscribe(&self) -> watch::Receiver<S> {
        self.inner.subscribe()
    }
}

impl<S: PartialEq + Clone> StateWatcher<S> {
    /// Publishes `state` if it differs from the current one; whether it did.
    pub(crate) fn publish(&self, state: &S) -> bool {
        self.inner.send_if_modified(|current| {
            if current == state {
                false
            } else {
                current.clone_from(state);
                true
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_notifies_only_on_change() {
        let (_tx, _rx, watcher) = ChannelBuilder::<(), u8>::new().build(1);
        let mut seen = watcher.subscribe();
        assert!(!watcher.publish(&1));
        assert!(!seen.has_changed().unwrap());
        assert!(watcher.publish(&2));
        assert!(seen.has_changed().unwrap());
        assert_eq!(*seen.borrow_and_update(), 2);
        assert!(!watcher.publish(&2));
        assert!(!seen.has_changed().unwrap());
    }

    #[tokio::test]
    async fn queued_events_survive_the_senders() {
        let (tx, mut rx, _w) = ChannelBuilder::<u8, ()>::new().capacity(0).build(());
        tx.send(1).await.unwrap();
        drop(tx);
        assert!(matches!(rx.poll_now(), Polled::Event(1)));
        assert!(matches!(rx.poll_now(), Polled::Closed));
        assert_eq!(rx.next().await, None);
    }

    #[tokio::test]
    async fn sending_to_a_dropped_receiver_returns_the_event() {
        let (tx, rx, _w) = ChannelBuilder::<u8, ()>::new().build(());
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.send(9).await, Err(ExternalEventSendError(9)));
    }
}
