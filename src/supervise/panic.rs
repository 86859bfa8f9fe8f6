//! Catching panics of user code inside futures, without `futures` and
//! without `unsafe`: the wrapped future is `Unpin` (a `Pin<Box<_>>` or a
//! `Pin<&mut _>` from [`std::pin::pin!`]), so polling it needs no projection.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `F`, turning a panic during any poll into `Err(message)`.
///
/// Unwind safety: after a panic the drive loop drops the future and only
/// reports the panic as a failure event; the state it may have left half
/// updated is the component's own context, which its failure handling
/// is there to inspect.
pub(crate) struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Wraps `future` so that a panic while polling it becomes `Err(message)`.
pub(crate) fn catching<F: Future + Unpin>(future: F) -> CatchUnwind<F> {
    CatchUnwind(future)
}

/// Runs `f`, turning a panic into `Err(message)`.
pub(crate) fn catching_sync<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic payload (`panic!("..")` carries a `&str` or a `String`).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_polling_becomes_its_message() {
        let future = std::pin::pin!(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 7);
        });
        assert_eq!(catching(future).await, Err::<(), _>("boom 7".to_owned()));
        let fine = Box::pin(async { 5 });
        assert_eq!(catching(fine).await, Ok(5));
    }

    #[test]
    fn non_string_payloads_are_named() {
        assert_eq!(
            catching_sync(|| std::panic::panic_any(3_u8)),
            Err("panic with a non-string payload".to_owned())
        );
        assert_eq!(
            catching_sync(|| panic!("static")),
            Err::<(), _>("static".to_owned())
        );
    }
}
