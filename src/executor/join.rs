//! `JoinHandle`: an owned permission to await a task's output.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use super::join_error::JoinError;
use super::join_state;
use super::task::{RawTask, CANCELLED, COMPLETE};

/// An owned permission to await a task's output.
///
/// Awaiting it yields `Ok(output)`, or `Err` if the task panicked or was cancelled (by
/// [`abort`](JoinHandle::abort) or by the loop closing). Dropping it detaches the task, which
/// keeps running. It is `Send` when the output is, so a task spawned on one loop can be awaited
/// from another.
pub struct JoinHandle<T> {
    raw: RawTask,
    _output: PhantomData<T>,
}

// SAFETY: the handle only moves the output (`T: Send`) across threads and touches the task
// through its atomic state protocol (see `task.rs`).
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: `&JoinHandle` only allows `abort` and `is_finished`, which use atomics.
unsafe impl<T: Send> Sync for JoinHandle<T> {}

impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    pub(super) fn new(raw: RawTask) -> JoinHandle<T> {
        JoinHandle {
            raw,
            _output: PhantomData,
        }
    }

    /// Asks the task to stop: its future is dropped at its next turn on its loop, and this
    /// handle then yields an error for which [`JoinError::is_cancelled`] is true. Does nothing
    /// if the task already finished. Callable from any thread.
    pub fn abort(&self) {
        let h = self.raw.header();
        let prev = h.state.fetch_or(CANCELLED, Ordering::AcqRel);
        if prev & (COMPLETE | CANCELLED) == 0 {
            super::schedule(self.raw.as_ptr());
        }
    }

    /// Whether the task has finished (with an output, a panic, or a cancellation).
    pub fn is_finished(&self) -> bool {
        self.raw.header().state.load(Ordering::Acquire) & COMPLETE != 0
    }

    /// Stores `waker` for the owner to wake on completion. Returns false if the task
    /// completed meanwhile (the output can then be read).
    fn set_join_waker(&self, waker: &Waker) -> bool {
        join_state::register(&self.raw.header().state, self.raw.join_waker(), waker)
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let h = self.raw.header();
        if h.state.load(Ordering::Acquire) & COMPLETE == 0 && self.set_join_waker(cx.waker()) {
            return Poll::Pending;
        }
        let mut out: Poll<Result<T, JoinError>> = Poll::Pending;
        // SAFETY: COMPLETE was observed with Acquire and this handle holds JOIN_INTEREST, so
        // it owns the output; `out` is a valid `Poll<Result<T, JoinError>>`.
        unsafe {
            self.raw
                .read_output((&mut out as *mut Poll<Result<T, JoinError>>).cast())
        };
        match out {
            Poll::Ready(r) => Poll::Ready(r),
            // Polled again after it returned Ready: the output is gone.
            Poll::Pending => panic!("JoinHandle polled after it returned its output"),
        }
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if join_state::release_interest(&self.raw.header().state) {
            // SAFETY: the owner completed while we held JOIN_INTEREST, so the output is ours.
            unsafe { self.raw.drop_output() };
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
