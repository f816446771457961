//! What a reap leaves for after the driver's borrow ends: the wakers to wake and the orphaned
//! ops' data to release (see the driver's contract: neither runs while it is borrowed).

use std::task::Waker;

use super::completion::{Completion, Orphan};
use super::Driver;

/// Wake-ups and orphans collected while the driver was borrowed.
#[derive(Default)]
pub(crate) struct Released {
    pub(crate) wakers: Vec<Waker>,
    pub(crate) orphans: Vec<(Box<dyn Orphan>, Completion)>,
}

impl Released {
    pub(crate) fn is_empty(&self) -> bool {
        self.wakers.is_empty() && self.orphans.is_empty()
    }

    /// Wakes and drops everything. Call with no borrow of the driver held.
    pub(crate) fn run(&mut self) {
        if !self.wakers.is_empty() {
            for w in self.wakers.drain(..) {
                w.wake();
            }
        }
        if !self.orphans.is_empty() {
            for (mut o, c) in self.orphans.drain(..) {
                o.release(c);
                drop(o);
            }
        }
    }
}

impl Driver {
    /// Moves what the last reap released into `out`, to be run after the borrow ends.
    pub(crate) fn take_released(&self, out: &mut Released) {
        let mut inner = self.0.inner.borrow_mut();
        if !inner.released.is_empty() {
            std::mem::swap(&mut inner.released, out);
        }
    }

    #[inline]
    pub(crate) fn has_released(&self) -> bool {
        !self.0.inner.borrow().released.is_empty()
    }
}
