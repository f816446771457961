//! A value only the thread of one loop's driver may touch, though the objects holding it
//! (`Arc`s inside `Send` sockets) may travel between threads.
//!
//! What makes it sound: a borrow needs a `&Driver` with the owner's id. A `Driver` is an
//! `Rc`, so it and every clone stay on the thread that made it, and driver ids are never
//! reused: every borrow that passes the check is on that one thread. The busy flag turns a
//! re-entrant borrow on that thread into a panic instead of two `&mut`. Dropping the value
//! needs `&mut self`, which no borrow can hold at the same time.
//!
//! This replaces a `Mutex` on the per-request path of a thread-per-core loop, where the lock
//! could never be contended and its atomics and poison checks were pure cost.

use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};

use super::Driver;

pub(crate) struct LoopCell<T> {
    /// The loop whose thread may touch `value`.
    owner: u64,
    /// A borrow is live (a re-entrant one would alias it).
    busy: Cell<bool>,
    value: UnsafeCell<T>,
}

// SAFETY: `value` and `busy` are only reached through `borrow`, which checks that the caller
// holds the owner's driver and so runs on its thread (see the module doc): they are never
// touched from two threads. Moving the whole cell (or its last `Arc`) moves a `T: Send`.
unsafe impl<T: Send> Sync for LoopCell<T> {}
// SAFETY: as above; `T: Send`.
unsafe impl<T: Send> Send for LoopCell<T> {}

impl<T> LoopCell<T> {
    /// A cell for `owner`'s thread.
    pub(crate) fn new(owner: &Driver, value: T) -> LoopCell<T> {
        LoopCell {
            owner: owner.id(),
            busy: Cell::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value; `driver` proves the caller is on a driver's thread.
    ///
    /// # Panics
    ///
    /// If `driver` is not the owner (an I/O object used on another loop than the one that
    /// serves it), or if the value is already borrowed.
    #[track_caller]
    #[inline]
    pub(crate) fn borrow(&self, driver: &Driver) -> LoopRef<'_, T> {
        if driver.id() != self.owner {
            wrong_loop();
        }
        // Only the owner's thread gets here (the module doc), so `busy` is not shared.
        if self.busy.replace(true) {
            panic!("ringloop: a loop-confined value was borrowed while already borrowed");
        }
        LoopRef { cell: self }
    }
}

#[cold]
#[track_caller]
fn wrong_loop() -> ! {
    panic!(
        "ringloop: an I/O object was used on another event loop than the one serving it; it \
         belongs to the loop where it was first used"
    )
}

/// A live borrow of a [`LoopCell`]'s value; ends when dropped.
pub(crate) struct LoopRef<'a, T> {
    cell: &'a LoopCell<T>,
}

impl<T> Deref for LoopRef<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this borrow is the only one (`busy`), on the owner's thread.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for LoopRef<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` keeps this reference unique.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for LoopRef<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.cell.busy.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_driver(f: impl FnOnce(&Driver)) {
        let mut lp = crate::EventLoop::new().unwrap();
        lp.block_on(async { crate::driver::with_current(|d| f(d)).unwrap() });
    }

    #[test]
    fn the_owner_borrows_and_a_second_borrow_panics() {
        with_driver(|d| {
            let c = LoopCell::new(d, vec![1]);
            c.borrow(d).push(2);
            assert_eq!(*c.borrow(d), [1, 2]);
            let held = c.borrow(d);
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = c.borrow(d);
            }));
            assert!(again.is_err(), "a re-entrant borrow must panic, not alias");
            drop(held);
            assert_eq!(c.borrow(d).len(), 2);
        });
    }

    #[test]
    fn another_loop_is_refused() {
        let mut cell = None;
        with_driver(|d| cell = Some(LoopCell::new(d, 0u32)));
        let cell = cell.unwrap();
        with_driver(|other| {
            let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = cell.borrow(other);
            }));
            assert!(refused.is_err());
        });
    }
}
