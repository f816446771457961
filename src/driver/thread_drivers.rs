//! The thread's drivers, by loop id (see `util::loop_parts`).

use std::rc::Rc;

use super::{Driver, DriverCell};
use crate::util::loop_parts::{Current, Entered, LoopPart, Registry};

thread_local! {
    static DRIVERS: Registry<DriverCell> = const { Registry::new() };
    static CURRENT: Current<DriverCell> = const { Current::new() };
}

impl LoopPart for DriverCell {
    fn loop_id(&self) -> u64 {
        self.id
    }
}

pub(super) fn register(d: &Driver) {
    DRIVERS.with(|r| r.register(&d.0));
}

/// Removes a closed driver from this thread's registry.
pub(crate) fn unregister(id: u64) {
    DRIVERS.with(|r| r.unregister(id));
}

/// Keeps a driver current until dropped.
pub(crate) struct EnterGuard(Option<Entered<DriverCell>>);

pub(super) fn enter(d: &Rc<DriverCell>) -> EnterGuard {
    EnterGuard(Some(CURRENT.with(|c| c.enter(d))))
}

impl Drop for EnterGuard {
    fn drop(&mut self) {
        if let Some(e) = self.0.take() {
            // The loop stops being current (`block_on` returned, say, and the future it ran
            // was dropped): closes queued meanwhile go now, not at some later run.
            with_current(|d| d.flush_closes());
            CURRENT.with(|c| c.leave(e));
        }
    }
}

/// The driver of the loop running on this thread, if any.
pub(crate) fn current() -> Option<Driver> {
    CURRENT.with(|c| c.rc_ptr()).map(|ptr| {
        // SAFETY: `rc_ptr` handed us `Rc::as_ptr` of a live cell (kept alive by the enter
        // guard); taking one more strong count and wrapping it gives an owned `Rc`.
        unsafe {
            Rc::increment_strong_count(ptr);
            Driver(Rc::from_raw(ptr))
        }
    })
}

/// Runs `f` with the driver of the loop running on this thread, borrowed: unlike
/// [`current`], no reference count is taken. For the per-operation paths.
///
/// Always inlined, as are the receive path's `RecvFuture::poll`, `Armed::poll_next_on` and
/// `Driver::poll_stream`: with `#[inline]` only, a fat-LTO build keeps this one (with the
/// closure) and those out of line, and the echo's per-request path costs more under LTO
/// than without it.
#[inline(always)]
pub(crate) fn with_current<R>(f: impl FnOnce(&Driver) -> R) -> Option<R> {
    let ptr = CURRENT.with(|c| c.rc_ptr())?;
    // The cell is owned by an `Rc` that the enter guard keeps alive while it is current,
    // which spans this call (the guard lives in the running loop's frame, below us on the
    // stack). The `Driver` made here borrows that count: ManuallyDrop keeps it from being
    // released, and it does not outlive `f`.
    // SAFETY: `ptr` is `Rc::as_ptr` of a live `Rc<DriverCell>` (see above), with the whole
    // allocation's provenance; no count is taken or lost.
    let rc = unsafe { Rc::from_raw(ptr) };
    let d = std::mem::ManuallyDrop::new(Driver(rc));
    Some(f(&d))
}

/// A driver alive on this thread, by id.
pub(crate) fn lookup(id: u64) -> Option<Driver> {
    match current() {
        Some(d) if d.id() == id => Some(d),
        _ => DRIVERS.with(|r| r.lookup(id)).map(Driver),
    }
}

/// The id of the loop running on this thread, if any.
pub(crate) fn current_id() -> Option<u64> {
    CURRENT.with(|c| c.with_current(|d| d.id))
}
