//! `race`: run two futures until either finishes.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

/// Resolves with the output of whichever of `a` and `b` finishes first (`a` when both are
/// ready in the same poll); the other is dropped.
pub(crate) async fn race<T>(a: impl Future<Output = T>, b: impl Future<Output = T>) -> T {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        b.as_mut().poll(cx)
    })
    .await
}
