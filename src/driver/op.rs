//! `Op<T>`: the future of one in-flight operation, and the driver's side of its lifecycle:
//! submit, poll for the final completion, and drop (cancel, then orphan or leak).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::squeue;

use super::completion::{Completion, Orphan};
use super::held::Held;
use super::slot::Lifecycle;
use super::{closed_error, lookup, with_current, Driver};

/// An operation the kernel can run: it builds its SQE and owns what the SQE points at.
///
/// # Safety
///
/// Every pointer in the entry returned by [`sqe`](OpCode::sqe) must refer to memory owned by
/// `self` (or `'static`) that stays valid, and at the same address, for as long as `self` is
/// alive, **including after `self` is moved**: heap blocks (`Vec`, `Box`, `CString`) qualify,
/// fields stored inline in `self` do not. The driver moves `self` into its op table when the
/// future is dropped and keeps it there until the final CQE.
pub(crate) unsafe trait OpCode: 'static {
    /// The SQE for this op; its `user_data` is set by the driver.
    fn sqe(&mut self) -> squeue::Entry;

    /// Told of a CQE that reached an op nobody waits for any more, so that a result which
    /// carries a resource (an fd, say) is released. Must not touch the loop.
    fn release(&mut self, _c: Completion) {}

    /// Told that the kernel completed the op, just before its outcome is handed out (not
    /// for an op that never reached the kernel, whose outcome is the submission's error).
    #[inline]
    fn completed(&mut self) {}
}

impl<T: OpCode> Orphan for T {
    fn release(&mut self, c: Completion) {
        OpCode::release(self, c)
    }
}

/// What an op resolves to: its result, the CQE flags, and its data given back.
pub(crate) struct Outcome<T> {
    pub(crate) result: io::Result<u32>,
    pub(crate) flags: u32,
    pub(crate) data: T,
}

/// The future of one operation. Submitted on first poll, to the loop polling it; it belongs to
/// that loop from then on.
pub(crate) struct Op<T: OpCode> {
    /// 0 until submitted; then the id of the loop whose op table holds slot `key`.
    loop_id: u64,
    key: usize,
    /// `None` once the outcome was handed out. Held (see [`Held`]): the kernel may use
    /// pointers into it from submission to the final CQE, while the op moves. The `Option`
    /// inside, where its niche keeps the future as small as a plain `Option<T>`.
    data: Held<Option<T>>,
}

// `T` is never pinned: what the kernel touches lives on the heap (see `OpCode`).
impl<T: OpCode> Unpin for Op<T> {}

impl<T: OpCode> Op<T> {
    pub(crate) fn new(data: T) -> Op<T> {
        Op {
            loop_id: 0,
            key: 0,
            data: Held::new(Some(data)),
        }
    }
}

impl<T: OpCode> Op<T> {
    /// The op's data while it has not been submitted (first poll), else `None`.
    pub(crate) fn unsubmitted_mut(&mut self) -> Option<&mut T> {
        match self.loop_id {
            0 => self.data.get_mut().as_mut(),
            _ => None,
        }
    }

    /// Takes the data back from an op that was never submitted; it then never will be.
    pub(crate) fn take_unsubmitted(&mut self) -> Option<T> {
        match self.loop_id {
            0 => self.data.get_mut().take(),
            _ => None,
        }
    }
}

#[track_caller]
fn wrong_loop() -> ! {
    panic!(
        "ringloop: an I/O operation started on one event loop was polled where that loop is not \
         running; an I/O object and its futures belong to the loop that first polled them"
    )
}

impl<T: OpCode> Future for Op<T> {
    type Output = Outcome<T>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let this = self.get_mut();
        match with_current(|driver| this.poll_on(driver, cx)) {
            Some(p) => p,
            None if this.loop_id == 0 => panic!(
                "ringloop: an I/O future was polled outside a running event loop; run it \
                 with EventLoop::block_on or spawn it on a loop"
            ),
            None => wrong_loop(),
        }
    }
}

impl<T: OpCode> Op<T> {
    /// [`poll`](Future::poll) for a caller that already holds the running loop's driver
    /// (one thread-local lookup for several ops). Panics if the op belongs to another loop.
    #[inline]
    pub(crate) fn poll_on(
        &mut self,
        driver: &super::Driver,
        cx: &mut Context<'_>,
    ) -> Poll<Outcome<T>> {
        if self.loop_id == 0 {
            let data = self.data.get_mut().as_mut();
            let sqe = data.expect("Op polled after it completed").sqe();
            return match driver.submit_op(sqe, cx.waker()) {
                Ok(key) => {
                    self.loop_id = driver.id();
                    self.key = key;
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Outcome {
                    result: Err(e),
                    flags: 0,
                    data: self
                        .data
                        .get_mut()
                        .take()
                        .expect("Op polled after it completed"),
                }),
            };
        }
        if driver.id() != self.loop_id {
            wrong_loop();
        }
        match driver.poll_op(self.key, cx) {
            Poll::Ready(c) => {
                let mut data = self
                    .data
                    .get_mut()
                    .take()
                    .expect("Op polled after it completed");
                data.completed();
                Poll::Ready(Outcome {
                    result: c.result(),
                    flags: c.flags,
                    data,
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: OpCode> Op<T> {
    /// Asks the kernel to end the op early; it still completes (with `ECANCELED`, or its
    /// result if it won the race), and is polled for that as usual. Nothing if it was never
    /// submitted or has completed.
    pub(crate) fn cancel(&self) -> io::Result<()> {
        if self.loop_id == 0 || self.data.get().is_none() {
            return Ok(());
        }
        let Some(driver) = lookup(self.loop_id) else {
            return Ok(());
        };
        let mut inner = driver.0.inner.borrow_mut();
        match inner.ops.get(self.key) {
            Some(Lifecycle::Submitted { .. }) => inner.push_cancel(self.key),
            _ => Ok(()),
        }
    }
}

impl<T: OpCode> Drop for Op<T> {
    /// The common case inline: never submitted (its data is dropped as usual), or its outcome
    /// was handed out. Only an op still in flight goes the long way.
    #[inline]
    fn drop(&mut self) {
        if self.loop_id != 0 && self.data.get().is_some() {
            self.drop_in_flight();
        }
    }
}

impl<T: OpCode> Op<T> {
    /// Dropped while the kernel may still use its data: the slot keeps the data until the
    /// final CQE (or, if that cannot be known, it is leaked).
    #[cold]
    #[inline(never)]
    fn drop_in_flight(&mut self) {
        if self.data.get().is_none() {
            return;
        }
        // Moved out as it is held, unclaimed: the kernel may still use pointers into it.
        let data = std::mem::replace(&mut self.data, Held::new(None));
        let Some(driver) = lookup(self.loop_id) else {
            // The loop is not on this thread (the future was moved away) or is gone: we cannot
            // know whether the kernel is done with the data, so it is leaked, never freed.
            std::mem::forget(data);
            return;
        };
        let mut data = Some(data);
        let outcome = driver.drop_op(self.key, || {
            Box::new(data.take().expect("orphan taken once")) as Box<dyn Orphan>
        });
        match outcome {
            DropOutcome::Completed(c) => {
                if let Some(d) = data.as_mut().and_then(|d| d.get_mut().as_mut()) {
                    OpCode::release(d, c);
                }
            }
            DropOutcome::Orphaned => {}
            DropOutcome::Leak => std::mem::forget(data.take()),
        }
    }
}

/// What became of an op whose future was dropped (see `Driver::drop_op`).
pub(crate) enum DropOutcome {
    Completed(Completion),
    Orphaned,
    Leak,
}

impl Driver {
    /// Queues `sqe` (already carrying its `user_data`) for `data`'s op; returns its key.
    #[inline]
    fn submit_op(&self, sqe: squeue::Entry, waker: &Waker) -> io::Result<usize> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() {
            return Err(closed_error());
        }
        let key = inner.ops.insert(Lifecycle::Submitted {
            waker: Some(waker.clone()),
        });
        inner.owned += 1;
        if let Err(e) = inner.push(sqe.user_data(key as u64)) {
            inner.ops.remove(key);
            inner.owned -= 1;
            return Err(e);
        }
        Ok(key)
    }

    /// Takes the final completion of `key`, or registers `waker`.
    #[inline]
    fn poll_op(&self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut inner = self.0.inner.borrow_mut();
        let Some(slot) = inner.ops.get_mut(key) else {
            // Only reachable if the table was cleared at close: the op was abandoned.
            return Poll::Pending;
        };
        match slot {
            Lifecycle::Completed(c) => {
                let c = *c;
                // A completed slot holds only the `Copy` completion: nothing to drop.
                std::mem::forget(inner.ops.remove(key));
                Poll::Ready(c)
            }
            Lifecycle::Submitted { waker } => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            // An op with a result CQE then more (SEND_ZC: the notification that the buffer is
            // free): it resolves with the first CQE once the final one has arrived.
            Lifecycle::Streaming(st) if st.finished => {
                let first = st.queue.front();
                let freed = inner.ops.remove(key);
                drop(inner);
                drop(freed);
                match first {
                    Some(c) => Poll::Ready(c),
                    None => Poll::Pending,
                }
            }
            Lifecycle::Streaming(st) => {
                // Unlike a stream's, an op's future has one poller: a waker it replaces is
                // of a task the future has left, which has nothing to re-poll. Dropped, not
                // woken, once the borrow has ended.
                let old = st.wait(cx.waker());
                drop(inner);
                drop(old);
                Poll::Pending
            }
            // Abandoned at close; the kernel may still write this op's memory, so the future
            // must never complete and hand it back.
            _ => Poll::Pending,
        }
    }

    /// Called when an op's future is dropped while its slot is live:
    /// - the final completion had arrived (or every CQE of a finished stream): the slot is
    ///   freed and the caller owns the data again ([`DropOutcome::Completed`]);
    /// - the kernel still owes it: `orphan()` is moved into the slot, which keeps it until
    ///   the final CQE, and a cancel is queued ([`DropOutcome::Orphaned`]);
    /// - the loop closed and abandoned the op: the caller must leak the data, which the
    ///   kernel may still write ([`DropOutcome::Leak`]).
    fn drop_op(&self, key: usize, orphan: impl FnOnce() -> Box<dyn Orphan>) -> DropOutcome {
        let mut inner = self.0.inner.borrow_mut();
        match inner.ops.get(key) {
            Some(Lifecycle::Completed(c)) => {
                let c = *c;
                inner.ops.remove(key);
                DropOutcome::Completed(c)
            }
            Some(Lifecycle::Streaming(st)) if st.finished => {
                // Every CQE is in: nothing to cancel, the caller owns the data again. The
                // slot's state (its waker, what it kept) is dropped once the borrow ends.
                let first = st.queue.front();
                let freed = inner.ops.remove(key);
                drop(inner);
                drop(freed);
                match first {
                    Some(c) => DropOutcome::Completed(c),
                    None => DropOutcome::Completed(Completion { res: 0, flags: 0 }),
                }
            }
            Some(Lifecycle::Submitted { .. }) | Some(Lifecycle::Streaming(_)) => {
                let was_owned = inner.ops[key].has_owner();
                let waker = match std::mem::replace(&mut inner.ops[key], Lifecycle::Abandoned) {
                    Lifecycle::Submitted { waker } => waker,
                    Lifecycle::Streaming(st) => st.waker,
                    _ => None,
                };
                inner.ops[key] = Lifecycle::Orphaned(orphan());
                if was_owned {
                    inner.owned -= 1;
                }
                // The cancel is queued like any SQE: if the SQ is full it is submitted and
                // retried. If even that fails the op still completes by itself; the slot
                // keeps the data until it does.
                let _ = inner.push_cancel(key);
                drop(inner);
                drop(waker);
                DropOutcome::Orphaned
            }
            // Abandoned at close, or already gone: the data must be leaked.
            _ => DropOutcome::Leak,
        }
    }
}
