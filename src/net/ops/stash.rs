//! Results that arrived for futures that were dropped, kept for the next call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What makes `accept()` cancel-safe on the single-shot path: a connection accepted for a
/// dropped future is kept here, and the next call takes from here first. Checking an empty
/// stash costs one atomic load.
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

    /// Checked on every `accept()`: the empty case is one inlined atomic load.
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
