//! Results that arrived for futures that were dropped, kept for the next call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What makes `accept()` and `recv()` cancel-safe: a completion whose future was dropped
/// (a connection, received bytes, end of stream) is kept here, and the next call takes from
/// here first. Checking an empty stash costs one atomic load.
pub(crate) struct Stash<T> {
    nonempty: AtomicBool,
    queue: Mutex<VecDeque<T>>,
}

impl<T> Default for Stash<T> {
    fn default() -> Stash<T> {
        Stash {
            nonempty: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T> Stash<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<T>> {
        // Only pushes and pops happen under the lock; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, v: T) {
        self.lock().push_back(v);
        self.nonempty.store(true, Ordering::Release);
    }

    /// Whether something may be waiting: one atomic load, for a fast path to skip the stash.
    #[inline]
    pub(crate) fn maybe_nonempty(&self) -> bool {
        self.nonempty.load(Ordering::Acquire)
    }

    /// Checked on every `recv()`/`accept()`: the empty case is one inlined atomic load.
    #[inline]
    pub(crate) fn pop(&self) -> Option<T> {
        if !self.nonempty.load(Ordering::Acquire) {
            return None;
        }
        self.pop_locked()
    }

    #[cold]
    fn pop_locked(&self) -> Option<T> {
        let mut q = self.lock();
        let v = q.pop_front();
        if q.is_empty() {
            self.nonempty.store(false, Ordering::Release);
        }
        v
    }
}
