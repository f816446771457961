//! Detached ops: ops no future waits on, owned by a [`Detached`] owner (a stream's write
//! queue) that the slot keeps alive until the final CQE and that is told of each CQE once the
//! driver's borrow has ended. With them, the sends tried at submit and the room watcher that
//! resumes a try that came back short.

use std::cell::RefMut;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::squeue;

use super::completion::Detached;
use super::slot::Lifecycle;
use super::{closed_error, Driver, Inner};

impl Driver {
    /// Whether detached ops' owners have CQEs to be told of (see [`run_detached`]).
    ///
    /// [`run_detached`]: Driver::run_detached
    #[inline]
    pub(crate) fn has_detached(&self) -> bool {
        !self.0.inner.borrow().detached.is_empty()
    }

    /// Tells detached ops' owners of their reaped CQEs (see [`Detached`]); what they submit
    /// meanwhile and completes at once is told too. Call with no borrow of the driver held.
    /// Newest first: the order between owners does not matter, and an owner (a write queue)
    /// has one op in flight at a time.
    // Always: once or twice a turn in a server, whose replies are detached ops; outlined, the
    // call costs more than its empty check.
    #[inline(always)]
    pub(crate) fn run_detached(&self) {
        loop {
            let next = self.0.inner.borrow_mut().detached.pop();
            let Some((owner, c)) = next else {
                return;
            };
            owner.complete(self, c);
        }
    }

    /// Queues `sqe` for an op no future waits on: `owner` keeps everything the kernel may
    /// touch for it and is told of each CQE (see [`Detached`]). Returns the op's key. Refused
    /// once the loop is closing, so an owner's follow-up ops cannot keep a close going.
    #[inline]
    pub(crate) fn submit_detached(
        &self,
        sqe: squeue::Entry,
        owner: Arc<dyn Detached>,
    ) -> io::Result<usize> {
        self.submit_detached_tried(sqe, owner, false)
    }

    /// [`submit_detached`](Self::submit_detached); with `tried`, for a send *tried at
    /// submit*: one with `MSG_DONTWAIT`, which the kernel never parks on the socket. It ends
    /// while the enter that submits it runs (sent, short, or `EAGAIN`), and its CQE is posted
    /// before that enter waits, so a wait that submits `k` of them asks for `k` more
    /// completions (see `Inner::enter`): a server's replies settle in the same call that then
    /// sleeps until the next request, one `io_uring_enter` per batch instead of two.
    ///
    /// A try that comes back short is resumed by its owner once the wait ends, which the
    /// room watcher (see `writable`) brings about when the socket has room again: only for a
    /// descriptor given to [`watch_writable`](Self::watch_writable). While the watcher is not
    /// armed, waits count no tries.
    ///
    /// Inlined into each caller: a write queue's every reply goes through it.
    #[inline(always)]
    pub(crate) fn submit_detached_tried(
        &self,
        sqe: squeue::Entry,
        owner: Arc<dyn Detached>,
        tried: bool,
    ) -> io::Result<usize> {
        let (mut inner, key) = self.push_detached(sqe, owner)?;
        if tried {
            inner.trials += 1;
            inner.tries_queued += 1;
        }
        Ok(key)
    }

    /// Takes a slot for `owner` and queues `sqe` with its key; the driver stays borrowed for
    /// the caller's bookkeeping. Refused once the loop is closing (see
    /// [`submit_detached`](Self::submit_detached)).
    #[inline(always)]
    pub(super) fn push_detached(
        &self,
        sqe: squeue::Entry,
        owner: Arc<dyn Detached>,
    ) -> io::Result<(RefMut<'_, Inner>, usize)> {
        let mut inner = self.0.inner.borrow_mut();
        if inner.ring.is_none() || inner.closing {
            return Err(closed_error());
        }
        let key = inner.ops.insert(Lifecycle::Detached(owner));
        if let Err(e) = inner.push(sqe.user_data(key as u64)) {
            // Never reached the SQ: the kernel knows nothing of it. The slot's reference goes
            // once the borrow has ended, in case it was the owner's last (its drop is the
            // user's buffers').
            let gone = inner.ops.remove(key);
            drop(inner);
            drop(gone);
            return Err(e);
        }
        Ok((inner, key))
    }

    /// Has the room watcher (see `writable`) wake the loop when `fd` becomes writable after a
    /// send found its buffer full, arming the watcher if need be; false if it cannot (then
    /// `fd`'s sends must not be tried). Should the watcher end later (at close, or ended by
    /// the kernel), waits stop letting tries settle unseen until it is armed again.
    pub(crate) fn watch_writable(&self, fd: RawFd) -> bool {
        // Taken out of the borrow: arming the watcher submits an op.
        let room = self.0.inner.borrow().room.clone();
        room.is_some_and(|r| r.watch(self, fd))
    }

    /// Stops the room watcher's watch of `fd`, if it has one: for a socket the loop hands
    /// back (`into_std`), which would otherwise keep waking this loop.
    pub(crate) fn unwatch_writable(&self, fd: RawFd) -> io::Result<()> {
        let room = self.0.inner.borrow().room.clone();
        room.map_or(Ok(()), |r| r.unwatch(fd))
    }

    /// A task now waits for a try's completion: the next wait must end at it, not count it
    /// among the tries that settle unseen. The count may already be 0 (the try went in an
    /// enter since) or belong to other tries: counting one too few only costs a wake-up,
    /// counting one too many could sleep through the completion that task waits for.
    #[inline]
    pub(crate) fn uncount_trial(&self) {
        let mut inner = self.0.inner.borrow_mut();
        inner.trials = inner.trials.saturating_sub(1);
    }
}
