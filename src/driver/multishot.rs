//! Multishot ops armed by I/O objects (a listener's accept, a stream's receive) rather than
//! by futures: their CQEs queue in the slot until the owner takes them, and the owner's drop,
//! on the loop's thread or any other, releases the slot.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use io_uring::squeue;

use super::completion::{Completion, Orphan};
use super::slot::{self, Lifecycle};
use super::stream_keep::StreamKeep;
use super::{closed_error, Driver};

/// Emptied stream states a loop keeps for reuse: enough for the receives of a burst of
/// short-lived connections, a few kilobytes at most.
const SPARE_STREAMS: usize = 64;

impl Driver {
    /// Arms a multishot op owned by an I/O object, not a future: its CQEs queue in the slot
    /// until [`poll_stream`](Driver::poll_stream) takes them, so whoever waits on it can be
    /// dropped without losing one. `keep` holds what the kernel uses for the op's life. With a
    /// non-zero `cap`, the op is cancelled once that many CQEs wait untaken; its final CQE
    /// (`ECANCELED`) then tells the owner to re-arm when it wants more.
    pub(crate) fn arm_stream(
        &self,
        sqe: squeue::Entry,
        keep: StreamKeep,
        cap: usize,
    ) -> io::Result<usize> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() {
            return Err(closed_error());
        }
        let st = match inner.spare_streams.pop() {
            Some(mut st) => {
                *st = slot::Stream::new(keep, cap);
                st
            }
            None => Box::new(slot::Stream::new(keep, cap)),
        };
        let key = inner.ops.insert(Lifecycle::Streaming(st));
        inner.owned += 1;
        if let Err(e) = inner.push(sqe.user_data(key as u64)) {
            let gone = inner.ops.remove(key);
            inner.owned -= 1;
            drop(inner);
            drop(gone);
            return Err(e);
        }
        Ok(key)
    }

    /// The next queued CQE of stream `key`, or registers `cx`'s waker. After the final CQE
    /// (one without `IORING_CQE_F_MORE`) has been taken, the slot is freed and `key` is dead.
    /// A stream has one waiter; a different waiter replacing it is woken so it can re-poll.
    /// Always inlined: see `thread_drivers::with_current`.
    #[inline(always)]
    pub(crate) fn poll_stream(&self, key: usize, cx: &mut Context<'_>) -> Poll<Completion> {
        let mut inner = self.0.inner.borrow_mut();
        let Some(Lifecycle::Streaming(st)) = inner.ops.get_mut(key) else {
            // Not a stream (abandoned at close): never hand anything out.
            return Poll::Pending;
        };
        if let Some(c) = st.queue.pop() {
            if st.finished && st.queue.is_empty() {
                let freed = inner.ops.remove(key);
                drop(inner);
                self.recycle_stream(freed);
            }
            return Poll::Ready(c);
        }
        let old = st.wait(cx.waker());
        drop(inner);
        if let Some(old) = old {
            old.wake();
        }
        Poll::Pending
    }

    /// Asks the kernel to end stream `key` while its owner keeps it: the CQEs already queued
    /// and those that come before the final one (`ECANCELED`, or the op's own end) are still
    /// taken through [`poll_stream`](Driver::poll_stream). Nothing if it has already ended.
    pub(crate) fn cancel_stream(&self, key: usize) -> io::Result<()> {
        let mut inner = self.0.inner.borrow_mut();
        match inner.ops.get(key) {
            Some(Lifecycle::Streaming(st)) if !st.finished => inner.push_cancel(key),
            _ => Ok(()),
        }
    }

    /// The I/O object that armed stream `key` is gone: release what is queued, cancel the op
    /// if it is still in the kernel, and keep `keep` until its final CQE.
    pub(crate) fn drop_stream(&self, key: usize) {
        let mut inner = self.0.inner.borrow_mut();
        let Some(Lifecycle::Streaming(st)) = inner.ops.get_mut(key) else {
            return;
        };
        let queued = st.queue.take_all();
        let waker = st.waker.take();
        let mut keep = std::mem::take(&mut st.keep);
        let finished = st.finished;
        let freed = if finished {
            Some(inner.ops.remove(key))
        } else {
            inner.owned -= 1;
            // Queued CQEs are released below, with the orphan kept until the final CQE.
            None
        };
        drop(inner);
        drop(waker);
        for c in queued {
            keep.release(c);
        }
        if finished {
            drop(keep);
            if let Some(freed) = freed {
                self.recycle_stream(freed);
            }
            return;
        }
        let orphan = keep.into_orphan();
        let mut inner = self.0.inner.borrow_mut();
        let emptied = std::mem::replace(&mut inner.ops[key], Lifecycle::Orphaned(orphan));
        let _ = inner.push_cancel(key);
        drop(inner);
        self.recycle_stream(emptied);
    }

    /// How many emptied stream states wait for reuse (see `recycle_stream`).
    #[cfg(test)]
    pub(crate) fn spare_streams(&self) -> usize {
        self.0.inner.borrow().spare_streams.len()
    }

    /// Keeps a freed stream slot's state for the next [`arm_stream`](Driver::arm_stream), so
    /// that a server taking a connection per request does not pay an allocation and a free
    /// for each one's receive. What it still holds (its owner's waker, what it kept for the
    /// kernel) is dropped here, with no borrow of the driver held (`arm_stream` overwrites
    /// the rest). Its CQEs have all been taken: both callers free a slot only then.
    fn recycle_stream(&self, freed: Lifecycle) {
        let Lifecycle::Streaming(mut st) = freed else {
            return;
        };
        debug_assert!(st.queue.is_empty());
        drop(st.waker.take());
        drop(std::mem::take(&mut st.keep));
        let mut inner = self.0.inner.borrow_mut();
        if inner.spare_streams.len() < SPARE_STREAMS {
            inner.spare_streams.push(st);
        }
    }
}

/// Streams whose owner was dropped on a thread other than the loop's: the loop releases them
/// (cancel, then keep what the kernel uses until the final CQE) on its next turn.
pub(crate) struct ForeignDrops {
    keys: Mutex<Vec<usize>>,
    pending: AtomicBool,
    wake_loop: Arc<dyn Fn() + Send + Sync>,
}

impl ForeignDrops {
    pub(super) fn new(wake_loop: Arc<dyn Fn() + Send + Sync>) -> ForeignDrops {
        ForeignDrops {
            keys: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            wake_loop,
        }
    }

    /// The keys posted since the last call, if any. A plain load first: the swap's locked
    /// instruction only when something is pending.
    #[inline]
    pub(super) fn take(&self) -> Option<Vec<usize>> {
        if !self.pending.load(Ordering::Relaxed) || !self.pending.swap(false, Ordering::Acquire) {
            return None;
        }
        Some(std::mem::take(
            &mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// Hands stream `key` to its loop for release, and wakes the loop. The key stays valid
    /// until then: a stream's slot is freed only by its owner or by this release.
    pub(crate) fn push(&self, key: usize) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
        self.pending.store(true, Ordering::Release);
        (self.wake_loop)();
    }
}
