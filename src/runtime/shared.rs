//! `Shared`: the cross-thread state of a loop (its remote queue, the stop flag and its
//! waiters, the count of live handles), below both `Handle` and the thread's context.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use slab::Slab;

use crate::executor::Remote;

/// The cross-thread state of a loop.
pub(crate) struct Shared {
    pub(crate) remote: Arc<Remote>,
    pub(super) stop: AtomicBool,
    /// Counts `stop()` calls, so a `Stopping` made before a stop resolves even after
    /// `run_forever` cleared the flag.
    pub(super) stop_epoch: AtomicU64,
    pub(super) stop_waiters: Mutex<Slab<Waker>>,
    /// Live `Handle`s: one of the things that could still stop a loop.
    pub(super) handles: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(remote: Arc<Remote>) -> Shared {
        Shared {
            remote,
            stop: AtomicBool::new(false),
            stop_epoch: AtomicU64::new(0),
            stop_waiters: Mutex::new(Slab::new()),
            handles: AtomicUsize::new(0),
        }
    }

    pub(crate) fn take_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) && self.stop.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(crate) fn handles(&self) -> usize {
        self.handles.load(Ordering::Acquire)
    }

    pub(super) fn waiters(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        // Only wakers are stored; a panic elsewhere cannot leave the slab inconsistent.
        self.stop_waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}
