//! What users write: the logic of a source, a transform, a sink or a step
//! (how it is called is told in the `stage` module docs).

use std::future::Future;

use serde_json::Value;

use crate::supervise::BoxError;

/// Why a stage that never took a snapshot cannot be handed one: the
/// checkpoint was taken by a version of the logic that did.
const NO_RESTORE: &str =
    "the journal holds a snapshot of this stage, but its logic does not implement `restore`";

/// Where a source or transform puts the items it emits. The stage sends
/// them downstream after each unit of work.
#[derive(Debug)]
pub struct Emitter<T> {
    // A plain `Vec`: the stage hands it downstream whole when it fills a
    // batch (or moves a front run of it), never item by item.
    items: Vec<T>,
    batch_size: usize,
}

impl<T> Emitter<T> {
    pub(crate) fn new(batch_size: usize) -> Self {
        // Allocated on first use (and kept): an idle stage costs no buffer.
        Emitter {
            items: Vec::new(),
            batch_size: batch_size.max(1),
        }
    }

    /// Emits one item.
    #[inline]
    pub fn push(&mut self, item: T) {
        self.items.push(item);
    }

    /// How many more items a source should emit in this call to fill a batch
    /// (at least 1); emitting more is allowed, just less efficient.
    pub fn room(&self) -> usize {
        self.batch_size.saturating_sub(self.items.len()).max(1)
    }

    /// Items emitted and not yet sent downstream.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items waiting to be sent, oldest first: the stage sends a front
    /// run of them and takes them out only once they are handed over.
    pub(crate) fn items_mut(&mut self) -> &mut Vec<T> {
        &mut self.items
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    /// Drops the items emitted after the first `len`: what a failed attempt
    /// at an item emitted, so that its retry does not emit them twice.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.items.truncate(len);
    }

    #[cfg(test)]
    /// Takes every item out, oldest first.
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        std::mem::take(&mut self.items)
    }
}

impl<T> Extend<T> for Emitter<T> {
    /// Emits every item of `items`, in order: one reservation for an
    /// iterator that knows its length, rather than a check per item.
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        self.items.extend(items);
    }
}

/// What a synchronous attempt at an item did: the answer of
/// [`Transform::process_now`] and [`Sink::consume_now`].
#[derive(Debug)]
pub enum Attempted<T> {
    /// The item was handled here: `Ok`, or an error that is an item
    /// failure, exactly as if the async method had returned it.
    Done(Result<(), BoxError>),
    /// Not handled here: the stage awaits the async method with the item.
    Later(T),
}

/// What a call of [`Source::produce`] says about the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// More items may follow; call `produce` again.
    More,
    /// The source is exhausted (items emitted in this call are still sent).
    Done,
}

/// A stage that produces items.
pub trait Source<T>: Send + 'static {
    /// Emits the next items into `out` (about [`Emitter::room`] of them) and
    /// says whether more follow.
    ///
    /// Waiting inside is fine. A pause (and a signal) is taken once the call
    /// returns and its items are sent; a cancel or a drain waits for neither
    /// (nor for a full output): the pending call's future is dropped at its
    /// current `.await`. Items it pushed into `out`
    /// before that are kept (and sent, on a drain); work it had not emitted
    /// yet is lost, so keep state that must survive outside the future or
    /// make the call cancel-safe (as `tokio`'s `recv` and `sleep` are).
    fn produce(
        &mut self,
        out: &mut Emitter<T>,
    ) -> impl Future<Output = Result<Produced, BoxError>> + Send;

    /// The source's position after the items it has emitted so far, for a
    /// checkpoint (see [`checkpoint`](crate::checkpoint)); `None` (the
    /// default) if it cannot resume from one. Called between calls of
    /// `produce`. An error abandons the checkpoint (the run goes on).
    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(None)
    }

    /// Called once, before the first `produce` of a run resumed from a
    /// checkpoint, with the position `snapshot` returned for it: emit from
    /// there on. An error fails the stage (its restart gets the position
    /// again).
    fn restore(&mut self, position: Value) -> Result<(), BoxError> {
        let _ = position;
        Err(NO_RESTORE.into())
    }

    /// Called once when the source is done (exhausted or drained); its value
    /// is recorded with the stage's completion.
    fn complete(&mut self) -> impl Future<Output = Result<Option<Value>, BoxError>> + Send {
        async { Ok(None) }
    }

    /// A flow-wide `Signal` control event reached this stage.
    fn on_signal(&mut self, _name: &str, _payload: &Value) {}
}

/// A stage that turns each input item into zero or more output items.
pub trait Transform<T>: Send + 'static {
    /// Handles one item, emitting any number of items into `out`. An error
    /// is an item failure: what this call emitted is discarded and the
    /// stage retries the item per its [`RetryPolicy`](super::RetryPolicy).
    fn process(
        &mut self,
        item: T,
        out: &mut Emitter<T>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Handles `item` at once when that is plain synchronous work: the
    /// stage asks this first and awaits [`process`](Self::process) only
    /// with an item handed back as [`Attempted::Later`] (the default, for
    /// every item). What holds for `process` holds here (an error is an
    /// item failure; what the call emitted is then discarded). Answering
    /// here spares a future per item, which is most of a cheap transform's
    /// cost; [`transform_fn`] does. Answer per item: a transform can handle
    /// some items here and leave the others to `process`.
    ///
    /// ```
    /// use troupe::stage::{Attempted, Emitter, Transform};
    /// use troupe::supervise::BoxError;
    ///
    /// struct Double;
    /// impl Transform<u64> for Double {
    ///     async fn process(&mut self, x: u64, out: &mut Emitter<u64>) -> Result<(), BoxError> {
    ///         out.push(x * 2);
    ///         Ok(())
    ///     }
    ///     fn process_now(&mut self, x: u64, out: &mut Emitter<u64>) -> Attempted<u64> {
    ///         out.push(x * 2);
    ///         Attempted::Done(Ok(()))
    ///     }
    /// }
    /// ```
    fn process_now(&mut self, item: T, out: &mut Emitter<T>) -> Attempted<T> {
        let _ = out;
        Attempted::Later(item)
    }

    /// The stage's state for a checkpoint (see
    /// [`checkpoint`](crate::checkpoint)), taken once every item before the
    /// checkpoint's barrier was handled; `None` (the default) if it keeps
    /// none. An error abandons the checkpoint (the run goes on).
    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(None)
    }

    /// Called once, before the first item of a run resumed from a
    /// checkpoint, with the state `snapshot` returned for it. An error
    /// fails the stage (its restart gets the state again).
    fn restore(&mut self, state: Value) -> Result<(), BoxError> {
        let _ = state;
        Err(NO_RESTORE.into())
    }

    /// Called once after the input ended: emit what is left, and return the
    /// value recorded with the stage's completion.
    fn complete(
        &mut self,
        _out: &mut Emitter<T>,
    ) -> impl Future<Output = Result<Option<Value>, BoxError>> + Send {
        async { Ok(None) }
    }

    /// A flow-wide `Signal` control event reached this stage.
    fn on_signal(&mut self, _name: &str, _payload: &Value) {}
}

/// A stage that consumes items.
///
/// Delivery is **at-least-once**: an item whose `consume` failed (or
/// panicked, or was cut short by a crash) is consumed again, on a retry or
/// after a restart, so a side effect it had before failing may happen
/// twice. Make writes idempotent (for instance keyed by the item).
pub trait Sink<T>: Send + 'static {
    /// Consumes one item. An error is an item failure: the stage retries
    /// the item per its [`RetryPolicy`](super::RetryPolicy).
    fn consume(&mut self, item: T) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Consumes `item` at once when that is plain synchronous work: the
    /// stage asks this first and awaits [`consume`](Self::consume) only
    /// with an item handed back as [`Attempted::Later`] (the default). An
    /// error is an item failure, as from `consume`; [`sink_fn`] answers
    /// here (see [`Transform::process_now`]).
    fn consume_now(&mut self, item: T) -> Attempted<T> {
        Attempted::Later(item)
    }

    /// The stage's state for a checkpoint (see
    /// [`checkpoint`](crate::checkpoint)), taken once every item before the
    /// checkpoint's barrier was handled; `None` (the default) if it keeps
    /// none. An error abandons the checkpoint (the run goes on).
    fn snapshot(&mut self) -> Result<Option<Value>, BoxError> {
        Ok(None)
    }

    /// Called once, before the first item of a run resumed from a
    /// checkpoint, with the state `snapshot` returned for it. An error
    /// fails the stage (its restart gets the state again).
    fn restore(&mut self, state: Value) -> Result<(), BoxError> {
        let _ = state;
        Err(NO_RESTORE.into())
    }

    /// Two-phase commit, first phase: the barrier of checkpoint
    /// `checkpoint` reached the sink, after every item before it. Make what
    /// those items did ready to commit (write them into a transaction the
    /// target can commit later), and keep the items after it apart. Called
    /// after [`snapshot`](Self::snapshot); an error abandons the checkpoint
    /// (the prepared work is committed with a later one).
    ///
    /// With [`commit`](Self::commit) this gives each item's effect once on
    /// a transactional target, across crashes; see
    /// [`checkpoint`](crate::checkpoint).
    fn pre_commit(&mut self, checkpoint: u64) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = checkpoint;
        async { Ok(()) }
    }

    /// Two-phase commit, second phase: checkpoint `checkpoint` is durable;
    /// commit everything pre-committed up to it. After a crash it is called
    /// again, right after [`restore`](Self::restore), for the checkpoint
    /// the run resumes from (it may or may not have been committed before
    /// the crash: make it idempotent); a pre-commit with a greater id was
    /// never part of a checkpoint, and its items come again. An error
    /// fails the stage (its restart calls it again).
    fn commit(&mut self, checkpoint: u64) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = checkpoint;
        async { Ok(()) }
    }

    /// Called once after the input ended, once the last pre-commit was
    /// committed (or its checkpoint abandoned); its value is recorded with
    /// the stage's completion. A two-phase sink commits the items after its
    /// last checkpoint here: a crash between this call and the stage's
    /// completion record hands them to it again (the one at-least-once
    /// window of a two-phase sink).
    fn complete(&mut self) -> impl Future<Output = Result<Option<Value>, BoxError>> + Send {
        async { Ok(None) }
    }

    /// A flow-wide `Signal` control event reached this stage.
    fn on_signal(&mut self, _name: &str, _payload: &Value) {}
}

/// The outputs of a step's upstream steps, by stage name.
pub type StepInputs = serde_json::Map<String, Value>;

/// A single unit of workflow-style work: runs once, after every upstream
/// step completed, and its JSON result is recorded as its output.
pub trait Step: Send + 'static {
    /// Does the work, given the outputs of the steps it comes after. An
    /// error is retried per the stage's [`RetryPolicy`](super::RetryPolicy).
    fn run(&mut self, inputs: &StepInputs) -> impl Future<Output = Result<Value, BoxError>> + Send;
}

/// A step from an async closure; see [`step_fn`].
#[derive(Debug)]
pub struct FnStep<F>(F);

/// A step from a closure returning a future of its result.
pub fn step_fn<F, Fut>(f: F) -> FnStep<F>
where
    F: FnMut(StepInputs) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Value, BoxError>> + Send,
{
    FnStep(f)
}

impl<F, Fut> Step for FnStep<F>
where
    F: FnMut(StepInputs) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Value, BoxError>> + Send,
{
    fn run(&mut self, inputs: &StepInputs) -> impl Future<Output = Result<Value, BoxError>> + Send {
        (self.0)(inputs.clone())
    }
}

/// A source over an iterator; see [`source_iter`].
#[derive(Debug)]
pub struct IterSource<I>(I);

/// A source emitting every item of `items`, a batch per call.
pub fn source_iter<I: IntoIterator>(items: I) -> IterSource<I::IntoIter> {
    IterSource(items.into_iter())
}

impl<T, I> Source<T> for IterSource<I>
where
    I: Iterator<Item = T> + Send + 'static,
    T: Send + 'static,
{
    async fn produce(&mut self, out: &mut Emitter<T>) -> Result<Produced, BoxError> {
        let (room, before) = (out.room(), out.len());
        out.extend(self.0.by_ref().take(room));
        // Fewer than asked for: the iterator is exhausted.
        Ok(if out.len() - before < room {
            Produced::Done
        } else {
            Produced::More
        })
    }
}

/// A transform calling a closure per item; see [`transform_fn`].
#[derive(Debug)]
pub struct FnTransform<F>(F);

/// A transform from a closure that gets each item and the emitter.
pub fn transform_fn<T, F>(f: F) -> FnTransform<F>
where
    F: FnMut(T, &mut Emitter<T>) -> Result<(), BoxError> + Send + 'static,
{
    FnTransform(f)
}

impl<T, F> Transform<T> for FnTransform<F>
where
    F: FnMut(T, &mut Emitter<T>) -> Result<(), BoxError> + Send + 'static,
    T: Send + 'static,
{
    async fn process(&mut self, item: T, out: &mut Emitter<T>) -> Result<(), BoxError> {
        (self.0)(item, out)
    }

    #[inline]
    fn process_now(&mut self, item: T, out: &mut Emitter<T>) -> Attempted<T> {
        Attempted::Done((self.0)(item, out))
    }
}

/// A sink calling a closure per item; see [`sink_fn`].
#[derive(Debug)]
pub struct FnSink<F>(F);

/// A sink from a closure that gets each item.
pub fn sink_fn<T, F>(f: F) -> FnSink<F>
where
    F: FnMut(T) -> Result<(), BoxError> + Send + 'static,
{
    FnSink(f)
}

impl<T, F> Sink<T> for FnSink<F>
where
    F: FnMut(T) -> Result<(), BoxError> + Send + 'static,
    T: Send + 'static,
{
    async fn consume(&mut self, item: T) -> Result<(), BoxError> {
        (self.0)(item)
    }

    #[inline]
    fn consume_now(&mut self, item: T) -> Attempted<T> {
        Attempted::Done((self.0)(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_iterator_source_fills_a_batch_per_call() {
        let mut source = source_iter(0..5_u32);
        let mut out = Emitter::new(2);
        assert_eq!(source.produce(&mut out).await.unwrap(), Produced::More);
        assert_eq!(out.take_all(), [0, 1]);
        assert_eq!(source.produce(&mut out).await.unwrap(), Produced::More);
        // A full emitter still has room for one: the source never stalls.
        assert_eq!(source.produce(&mut out).await.unwrap(), Produced::More);
        assert_eq!(source.produce(&mut out).await.unwrap(), Produced::Done);
        assert_eq!(out.take_all(), [2, 3, 4]);
    }

    #[tokio::test]
    async fn closures_become_transforms_and_sinks() {
        let mut t = transform_fn(|x: u32, out: &mut Emitter<u32>| {
            if x.is_multiple_of(2) {
                out.push(x);
                out.push(x);
            }
            Ok(())
        });
        let mut out = Emitter::new(4);
        for x in 0..4 {
            t.process(x, &mut out).await.unwrap();
        }
        assert_eq!(out.take_all(), [0, 0, 2, 2]);
        let (seen, consumed) = std::sync::mpsc::channel();
        let mut s = sink_fn(move |x: u32| {
            if x > 9 {
                return Err("too big".into());
            }
            Ok(seen.send(x)?)
        });
        s.consume(1).await.unwrap();
        assert_eq!(s.consume(10).await.unwrap_err().to_string(), "too big");
        drop(s);
        assert_eq!(consumed.iter().collect::<Vec<_>>(), [1]);
    }
}
