//! What this thread is running: the loop whose tasks, ops and timers are "current".

use std::cell::Cell;
use std::sync::Arc;

use super::shared::Shared;
use super::Core;
use crate::driver;
use crate::executor;
use crate::time::TimersGuard;

thread_local! {
    /// True while `block_on` or `run_forever` runs on this thread.
    static RUNNING: Cell<bool> = const { Cell::new(false) };
    /// The shared state of the current loop (for `Handle::current`).
    static SHARED: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// Makes a loop current on this thread until dropped: its driver, scheduler and timers, and,
/// for `block_on`/`run_forever`, the "running" mark that forbids nesting.
pub(crate) struct Enter {
    running: bool,
    prev_shared: *const Shared,
    _shared: Arc<Shared>,
    // Dropped in reverse order of entering: fields drop in declaration order.
    _timers: TimersGuard,
    _sched: executor::EnterGuard,
    _driver: driver::EnterGuard,
}

#[track_caller]
pub(crate) fn enter(core: &Core, running: bool) -> Enter {
    if running && RUNNING.with(|r| r.replace(true)) {
        panic!(
            "ringloop: cannot run an event loop (block_on or run_forever) on a thread that is \
             already running one; spawn the future on the running loop with ringloop::spawn, \
             or run the other loop on its own thread"
        );
    }
    let driver = core.driver.enter();
    let sched = core.sched.enter();
    let timers = core.timers.enter();
    let prev_shared = SHARED.with(|s| s.replace(Arc::as_ptr(&core.shared)));
    Enter {
        running,
        prev_shared,
        _shared: core.shared.clone(),
        _timers: timers,
        _sched: sched,
        _driver: driver,
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        SHARED.with(|s| s.set(self.prev_shared));
        if self.running {
            RUNNING.with(|r| r.set(false));
        }
    }
}

/// The shared state of the loop current on this thread.
pub(crate) fn shared() -> Option<Arc<Shared>> {
    let ptr = SHARED.with(|s| s.get());
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null SHARED was set by `enter`, whose `Enter` holds an `Arc` to it until
    // it resets SHARED; so the pointee is alive and owned by an `Arc`.
    unsafe {
        Arc::increment_strong_count(ptr);
        Some(Arc::from_raw(ptr))
    }
}
