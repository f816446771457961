//! `JoinHandle`: an owned permission to await a task's output.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use super::join_error::JoinError;
use super::task::{RawTask, CANCELLED, COMPLETE, JOIN_INTEREST, JOIN_WAKER};

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
        let h = self.raw.header();
        let cell = self.raw.join_waker_cell();
        let mut state = h.state.load(Ordering::Acquire);
        if state & JOIN_WAKER != 0 {
            // SAFETY: with JOIN_WAKER set nobody writes the cell (the owner only wakes it by
            // reference, see `task.rs`); reading it to compare is fine.
            if unsafe { (*cell).as_ref() }.is_some_and(|w| w.will_wake(waker)) {
                return true;
            }
            // Take back exclusive access to the cell.
            loop {
                if state & COMPLETE != 0 {
                    return false;
                }
                match h.state.compare_exchange_weak(
                    state,
                    state & !JOIN_WAKER,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(s) => state = s,
                }
            }
        }
        // SAFETY: JOIN_WAKER is unset, so only this handle touches the cell.
        unsafe { *cell = Some(waker.clone()) };
        let mut state = h.state.load(Ordering::Acquire);
        loop {
            if state & COMPLETE != 0 {
                return false;
            }
            match h.state.compare_exchange_weak(
                state,
                state | JOIN_WAKER,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(s) => state = s,
            }
        }
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
        let prev = self
            .raw
            .header()
            .state
            .fetch_and(!JOIN_INTEREST, Ordering::AcqRel);
        if prev & COMPLETE != 0 {
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
