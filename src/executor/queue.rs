//! The run queue: a FIFO of tasks linked through their headers' `next` field.
//!
//! Pushing and popping touch two pointers and no allocation, which matters because every
//! completion that wakes a task is a push, and every task poll a pop.
//!
//! Access rules: owner thread only (the queue and the `next` links are `Cell`s). A task is in
//! the queue at most once, because it is pushed only when its `scheduled` flag was clear (and
//! the flag is set in the same step); so a header's `next` link belongs to this queue exactly
//! while the task is queued. A queued task is kept alive by the scheduler's slab reference or
//! by the reference its queue entry took over (see the executor's module contract).

use std::cell::Cell;
use std::ptr::NonNull;

use super::task::Header;

#[derive(Default)]
pub(super) struct RunQueue {
    head: Cell<Option<NonNull<Header>>>,
    tail: Cell<Option<NonNull<Header>>>,
}

impl RunQueue {
    /// Appends `task`.
    ///
    /// # Safety
    ///
    /// `task` is alive and stays alive while queued (see the module's rules), and it is not
    /// in the queue already: its `next` link is about to be overwritten.
    #[inline]
    pub(super) unsafe fn push_back(&self, task: NonNull<Header>) {
        // SAFETY: alive, per the caller; owner thread, so no other access to its `next`
        // link, which is free since the task is not queued.
        unsafe { task.as_ref() }.next.set(None);
        match self.tail.get() {
            // SAFETY: the tail is queued, hence alive (module rules).
            Some(tail) => unsafe { tail.as_ref() }.next.set(Some(task)),
            None => self.head.set(Some(task)),
        }
        self.tail.set(Some(task));
    }

    /// Takes the oldest task off the queue.
    #[inline]
    pub(super) fn pop_front(&self) -> Option<NonNull<Header>> {
        let head = self.head.get()?;
        // SAFETY: the head is queued, hence alive (module rules).
        let next = unsafe { head.as_ref() }.next.get();
        self.head.set(next);
        if next.is_none() {
            self.tail.set(None);
        }
        Some(head)
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.head.get().is_none()
    }
}
