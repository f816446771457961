//! Per-thread registries of loop parts (driver, timers), found by loop id.
//!
//! Futures such as I/O ops and sleeps store only their loop's id, so they stay `Send`. While a
//! loop runs on a thread, its parts are that thread's *current* ones (one pointer read per
//! poll). Every part alive on a thread is also in the thread's registry, so a future dropped
//! while its loop is not running (after `block_on` returned, during `close`) still finds it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// A loop part with the id of its loop.
pub(crate) trait LoopPart: 'static {
    fn loop_id(&self) -> u64;
}

/// Every part of one type alive on a thread, in a `thread_local!`.
pub(crate) struct Registry<T: LoopPart> {
    all: RefCell<Vec<Rc<T>>>,
}

impl<T: LoopPart> Registry<T> {
    pub(crate) const fn new() -> Registry<T> {
        Registry {
            all: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn register(&self, part: &Rc<T>) {
        self.all.borrow_mut().push(part.clone());
    }

    pub(crate) fn unregister(&self, id: u64) {
        let removed = {
            let mut all = self.all.borrow_mut();
            all.iter()
                .position(|p| p.loop_id() == id)
                .map(|i| all.swap_remove(i))
        };
        // Dropped outside the borrow: dropping a part may run user `Drop` code.
        drop(removed);
    }

    /// The part of loop `id`, if it lives on this thread.
    pub(crate) fn lookup(&self, id: u64) -> Option<Rc<T>> {
        self.all
            .borrow()
            .iter()
            .find(|p| p.loop_id() == id)
            .cloned()
    }
}

/// The part of the loop running on a thread, in a `thread_local!` of its own. It has no
/// destructor (a raw pointer, kept valid by the [`Entered`] guard), so reading it is a plain
/// load: the registry's vector, which must be dropped at thread exit, would add a check of
/// the thread-local's state to every poll.
pub(crate) struct Current<T: LoopPart> {
    ptr: Cell<*const T>,
}

impl<T: LoopPart> Current<T> {
    pub(crate) const fn new() -> Current<T> {
        Current {
            ptr: Cell::new(std::ptr::null()),
        }
    }

    /// Makes `part` current until the guard is dropped with [`Current::leave`].
    pub(crate) fn enter(&self, part: &Rc<T>) -> Entered<T> {
        let prev = self.ptr.replace(Rc::as_ptr(part));
        Entered {
            prev,
            keep: part.clone(),
        }
    }

    pub(crate) fn leave(&self, entered: Entered<T>) {
        self.ptr.set(entered.prev);
        drop(entered.keep);
    }

    /// The current part as `Rc::as_ptr` gave it (null if none): a pointer that may be turned
    /// back into an `Rc` (`Rc::from_raw`), unlike one made from a `&T`, whose provenance
    /// covers the part alone and not the reference counts before it.
    #[inline]
    pub(crate) fn rc_ptr(&self) -> Option<*const T> {
        let ptr = self.ptr.get();
        (!ptr.is_null()).then_some(ptr)
    }

    /// Runs `f` with the current part, if any.
    #[inline]
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let ptr = self.ptr.get();
        if ptr.is_null() {
            return None;
        }
        // SAFETY: a non-null `ptr` was set by `enter`, whose `Entered` holds an `Rc` to the
        // same part until `leave` resets it; so the part is alive.
        Some(f(unsafe { &*ptr }))
    }
}

/// Proof that a part was made current; hand it back to [`Current::leave`].
pub(crate) struct Entered<T: LoopPart> {
    prev: *const T,
    keep: Rc<T>,
}
