//! A descriptor shared by an I/O object (socket, file) and its in-flight ops.

use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A descriptor that stays open while any op using it may still be queued or in the kernel:
/// every op holds a clone, so closing the socket object never lets a queued SQE reach a
/// closed (and possibly reused) descriptor number. The last clone closes it: a stream's, on
/// a thread running a loop, by that loop's next enter (see [`SharedFd::stream`]); any other
/// with `close(2)`.
#[derive(Clone, Debug)]
pub(crate) struct SharedFd(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Taken only in `Drop` or `into_fd`, each the last use.
    fd: ManuallyDrop<OwnedFd>,
    /// Closed by the ring when the last clone drops on a thread running a loop.
    ring_close: bool,
    /// The loop that first used this socket (0: none yet).
    owner: AtomicU64,
}

impl SharedFd {
    pub(crate) fn new(fd: OwnedFd) -> SharedFd {
        SharedFd::with(fd, false)
    }

    /// A connected stream's descriptor. Last dropped on a thread running a loop, it is closed
    /// by that loop's next `io_uring_enter`, which every turn makes anyway, rather than with a
    /// `close(2)` of its own: a server that takes a connection per request saves a system
    /// call per connection. Listeners, datagram sockets and files close at once: a port
    /// bound again at once, or a file's close-time flush, must not wait for the next turn.
    pub(crate) fn stream(fd: OwnedFd) -> SharedFd {
        SharedFd::with(fd, true)
    }

    fn with(fd: OwnedFd, ring_close: bool) -> SharedFd {
        SharedFd(Arc::new(Inner {
            fd: ManuallyDrop::new(fd),
            ring_close,
            owner: AtomicU64::new(0),
        }))
    }

    /// The descriptor, if no op holds it any more (for an explicit, awaited close).
    pub(crate) fn try_unwrap(self) -> Result<OwnedFd, SharedFd> {
        Arc::try_unwrap(self.0)
            .map(Inner::into_fd)
            .map_err(SharedFd)
    }

    /// A reference that keeps the descriptor open, typed for a holder that knows nothing of
    /// descriptors (the driver, for an op an I/O object armed). The same count as a clone.
    pub(crate) fn hold(&self) -> Arc<dyn Send + Sync> {
        self.0.clone()
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.fd.as_raw_fd()
    }

    /// Records the loop using this socket on first use; panics if another loop uses it later.
    /// Called when an op is submitted, on the loop's thread.
    #[track_caller]
    #[inline]
    pub(crate) fn claim(&self) {
        let Some(id) = crate::driver::current_id() else {
            return; // Op::poll reports "outside a running event loop" itself.
        };
        self.claim_on(id);
    }

    /// [`claim`](SharedFd::claim) for a caller that already has the running loop's id.
    #[track_caller]
    #[inline]
    pub(crate) fn claim_on(&self, id: u64) {
        if self.0.owner.load(Ordering::Relaxed) != id {
            self.claim_first(id);
        }
    }

    #[track_caller]
    #[cold]
    fn claim_first(&self, id: u64) {
        let owner = self.0.owner.load(Ordering::Relaxed);
        if owner == id {
            return;
        }
        if owner == 0
            && self
                .0
                .owner
                .compare_exchange(0, id, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
        panic!(
            "ringloop: an I/O object (socket or file) first used on one event loop was used on \
             another; it is served by the loop where it is first used (make one per loop, e.g. \
             with TcpListener::bind_reuseport)"
        );
    }
}

impl Inner {
    fn into_fd(self) -> OwnedFd {
        let mut me = ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so `fd` is taken exactly once, here.
        unsafe { ManuallyDrop::take(&mut me.fd) }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // SAFETY: this is the last use of `fd`; `into_fd` (the only other taker) never lets
        // its value drop.
        let fd = unsafe { ManuallyDrop::take(&mut self.fd) };
        if !self.ring_close {
            return; // `fd` drops: `close(2)`
        }
        // The last clone: no op of any loop names the descriptor any more, so whichever loop
        // runs on this thread may close it. With none running (the loop gone, another
        // thread), the closure is dropped uncalled and `fd` with it: `close(2)`.
        crate::driver::with_current(move |d| d.defer_close(fd));
    }
}

impl AsRawFd for SharedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.raw()
    }
}

impl std::os::fd::AsFd for SharedFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&*self.0.fd)
    }
}
