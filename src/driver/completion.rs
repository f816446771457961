//! A CQE as the driver hands it on (`Completion`), and the two kinds of owner it hands CQEs
//! to besides a future: an abandoned op's [`Orphan`], and a [`Detached`] op's owner.

use std::io;
use std::sync::Arc;

use super::Driver;

/// What a CQE said: the result and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completion {
    /// `cqe.res`: non-negative on success, `-errno` on failure.
    pub(crate) res: i32,
    /// `cqe.flags` (`IORING_CQE_F_*`).
    pub(crate) flags: u32,
}

impl Completion {
    /// The result as an `io::Result`.
    pub(crate) fn result(&self) -> io::Result<u32> {
        if self.res < 0 {
            Err(io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res as u32)
        }
    }

    /// Whether more CQEs will follow for the same op (`IORING_CQE_F_MORE`).
    pub(crate) fn more(&self) -> bool {
        io_uring::cqueue::more(self.flags)
    }

    /// Whether the kernel picked a provided buffer for this CQE (`IORING_CQE_F_BUFFER`).
    #[inline]
    pub(crate) fn has_buffer(&self) -> bool {
        io_uring::cqueue::buffer_select(self.flags).is_some()
    }
}

/// Memory and resources an abandoned op keeps alive until its final CQE.
///
/// `release` is told of every CQE the op still receives, so that a result that carries a
/// resource (an accepted or opened descriptor) is closed rather than leaked. It may run while
/// the driver is borrowed, so it must not touch the loop; only crate code implements it. The
/// orphan itself (which may hold user buffers with their own `Drop`) is dropped outside any
/// borrow.
pub(crate) trait Orphan: 'static {
    fn release(&mut self, c: Completion);
}

/// The owner of an op that no future waits on (an I/O object's write queue, say), which owns
/// everything the kernel may touch for it until the final CQE.
///
/// [`complete`](Detached::complete) is told of every CQE of the op after the driver's borrow has
/// ended, on the loop's thread, so it may drop user values, wake wakers and submit follow-up
/// ops on `driver`. For the final CQE the slot is already freed, and `self` is the slot's own
/// reference. Only crate code implements it.
pub(crate) trait Detached: std::marker::Send + Sync + 'static {
    fn complete(self: Arc<Self>, driver: &Driver, c: Completion);
}
