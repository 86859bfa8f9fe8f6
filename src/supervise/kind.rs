//! One view of both supervisor kinds, so that a single drive loop runs them.
//!
//! A type could implement both [`SelfSupervised`] and [`HandlerSupervised`];
//! the marker parameter keeps the two blanket implementations apart.

use std::future::Future;
use std::pin::Pin;

use super::traits::{BoxError, DispatchResult, HandlerSupervised, SelfSupervised, Supervisor};
use crate::ids::{StageId, WriterId};

/// A boxed `Send` future, as `async_trait` methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Marker: drive the supervisor through [`SelfSupervised`].
#[derive(Debug, Clone, Copy)]
pub enum SelfKind {}

/// Marker: drive the supervisor through [`HandlerSupervised`].
#[derive(Debug, Clone, Copy)]
pub enum HandlerKind {}

/// The contract of both supervisor kinds, as the drive loop sees it.
/// Implemented for every [`SelfSupervised`] (`K = SelfKind`) and every
/// [`HandlerSupervised`] (`K = HandlerKind`) type; there is no need to
/// implement it by hand.
pub trait Supervised<K>: Supervisor {
    /// `dispatch_state` of the kind.
    fn dispatch<'a>(
        &'a mut self,
        state: &'a Self::State,
        context: &'a mut Self::Context,
    ) -> BoxFuture<'a, DispatchResult<Self::Event>>;
    /// `write_completion_event` of the kind.
    fn write_completion(&self) -> BoxFuture<'_, Result<(), BoxError>>;
    /// `event_for_action_error` of the kind.
    fn failure_event(&self, msg: String) -> Self::Event;
    /// `writer_id` of the kind.
    fn writer(&self) -> WriterId;
    /// The stage id, for handler-supervised stages.
    fn stage(&self) -> Option<StageId>;
}

/// Both kinds expose the same methods under the same names; one macro keeps
/// their two views identical. `$stage` maps the supervisor to its stage id.
macro_rules! supervised_view {
    ($kind_trait:ident, $marker:ty, $stage:expr) => {
        impl<T: $kind_trait> Supervised<$marker> for T {
            fn dispatch<'a>(
                &'a mut self,
                state: &'a Self::State,
                context: &'a mut Self::Context,
            ) -> BoxFuture<'a, DispatchResult<Self::Event>> {
                self.dispatch_state(state, context)
            }
            fn write_completion(&self) -> BoxFuture<'_, Result<(), BoxError>> {
                self.write_completion_event()
            }
            fn failure_event(&self, msg: String) -> Self::Event {
                self.event_for_action_error(msg)
            }
            fn writer(&self) -> WriterId {
                self.writer_id()
            }
            fn stage(&self) -> Option<StageId> {
                let stage: fn(&T) -> Option<StageId> = $stage;
                stage(self)
            }
        }
    };
}

supervised_view!(SelfSupervised, SelfKind, |_| None);
supervised_view!(HandlerSupervised, HandlerKind, |s| Some(s.stage_id()));
