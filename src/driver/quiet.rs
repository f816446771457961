//! Quiet tries: sends tried at submit whose success posts no CQE.
//!
//! A quiet try is a SEND with `MSG_DONTWAIT | MSG_WAITALL` and `IOSQE_CQE_SKIP_SUCCESS`
//! (Linux 6.1+, as every try; see `Driver::submit_detached_tried`). The kernel ends it while
//! the enter that submits it runs. If it sent every byte, that is a success and nothing is
//! posted. If it sent fewer (`MSG_WAITALL` makes a short send a failure), or none
//! (`EAGAIN`), or failed, a CQE is posted then, before that enter waits, so the wait ends at
//! once and the loop resumes the rest. No room watcher is needed, and no count of completions
//! to let settle unseen: a connection whose first write is its only one (a short-lived
//! client's) costs neither an `epoll_ctl` nor an `io_uring_enter` of its own for the reply.
//!
//! The driver confirms a quiet try, telling its owner "all sent", after an enter that
//! submitted it, once that enter's CQEs are reaped. It confirms only when, before the reap:
//! - the SQ was empty, so the try was consumed: an enter that submitted only part of the SQ
//!   (the kernel short of requests, or stopped at a bad SQE) may have left it there;
//! - the CQ had no overflow: a failure CQE held back by a full CQ would otherwise be
//!   confirmed as a success. The kernel posts held-back CQEs at the next enter, so a later
//!   enter confirms.
//!
//! A try whose failure CQE is reaped goes to its owner as any detached op's does; the enter
//! that reaped it drops it from the tries to confirm, before its key can be reused.
//!
//! The confirmation comes after the wait of the enter that submits the try. Where something
//! waits for it (a task on the owner, a receive waiting for a pool buffer the try's drop may
//! hand on, or the loop's close), that enter must not sleep: it only submits (see
//! [`Inner::quiet_want`]).

use std::io;
use std::sync::Arc;

use io_uring::squeue;

use super::completion::{Completion, Detached};
use super::slot::Lifecycle;
use super::{Driver, Inner};

/// The quiet tries of a driver.
pub(super) struct Quiet {
    /// The kernel runs them as described (6.1+), and tries are on.
    on: bool,
    /// Tries queued or submitted and not yet confirmed or failed: their key and length.
    pending: Vec<(usize, u32)>,
    /// Something waits for a pending try's confirmation (see [`Driver::need_quiet`]).
    needed: bool,
}

impl Quiet {
    pub(super) fn new(on: bool) -> Quiet {
        Quiet {
            on,
            pending: Vec::new(),
            needed: false,
        }
    }

    /// Whether any try awaits confirmation.
    #[inline]
    pub(super) fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl Driver {
    /// Whether sends may be tried quietly (see the module doc).
    #[inline]
    pub(crate) fn quiet_tries(&self) -> bool {
        self.0.inner.borrow().quiet.on
    }

    /// Queues `sqe`, a SEND with `MSG_DONTWAIT | MSG_WAITALL` of `len` bytes, as a quiet try
    /// owned by `owner` (see the module doc): `owner` is told of a failure's CQE, or of a
    /// completion for all `len` bytes once the driver confirms the try. Returns the op's key.
    #[inline]
    pub(crate) fn submit_detached_quiet(
        &self,
        sqe: squeue::Entry,
        owner: Arc<dyn Detached>,
        len: u32,
    ) -> io::Result<usize> {
        let sqe = sqe.flags(squeue::Flags::SKIP_SUCCESS);
        let (mut inner, key) = self.push_detached(sqe, owner)?;
        // Recorded once in the SQ: a push that made room by entering confirms only the tries
        // queued before it.
        inner.quiet.pending.push((key, len));
        Ok(key)
    }

    /// Something now waits for a quiet try's confirmation: the enter that submits it must
    /// not sleep (see the module doc).
    #[inline]
    pub(crate) fn need_quiet(&self) {
        let mut inner = self.0.inner.borrow_mut();
        if inner.quiet.is_pending() {
            inner.quiet.needed = true;
        }
    }
}

impl Inner {
    /// How many completions an enter asked to wait for `want` may wait for, with tries
    /// pending: none where one's confirmation, which comes after the wait, is waited for.
    #[cold]
    pub(super) fn quiet_want(&self, want: u32) -> u32 {
        let blocks = self.quiet.needed
            || self.closing
            || self.pool.as_ref().is_some_and(|p| p.has_waiters());
        if blocks {
            0
        } else {
            want
        }
    }

    /// The reap after an enter, with tries pending: then confirms them if they are known to
    /// be done (see the module doc).
    #[cold]
    #[inline(never)]
    pub(super) fn reap_confirming(&mut self) {
        // Both read before the reap, which may queue cancels: a CQE held back by a full CQ
        // may be a try's failure, and an SQE left in the SQ may be a try.
        let done = self.ring.as_mut().is_some_and(|r| {
            let sq = r.submission();
            !sq.cq_overflow() && sq.is_empty()
        });
        self.reap();
        let Inner {
            quiet,
            ops,
            detached,
            ..
        } = self;
        // A try whose slot is gone failed: its CQE, reaped in this enter, freed it. Its key
        // cannot have been reused yet (only reaps free slots, and nothing takes one during an
        // enter), but may be once the enter returns, so it is dropped from the list now.
        if !done {
            quiet
                .pending
                .retain(|&(key, _)| matches!(ops.get(key), Some(Lifecycle::Detached(_))));
            quiet.needed &= !quiet.pending.is_empty();
            return;
        }
        // Drained, not taken: the vector keeps its capacity for the next tries.
        for (key, len) in quiet.pending.drain(..) {
            if let Some(Lifecycle::Detached(_)) = ops.get(key) {
                if let Lifecycle::Detached(owner) = ops.remove(key) {
                    let res = i32::try_from(len).unwrap_or(i32::MAX);
                    detached.push((owner, Completion { res, flags: 0 }));
                }
            }
        }
        quiet.needed = false;
    }
}
