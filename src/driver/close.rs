//! Descriptors closed by the ring: a stream whose last user is dropped on a thread running a
//! loop is not closed with `close(2)` there and then but queued here, and the loop's next
//! `io_uring_enter` (the one every turn makes anyway, or the one made as the loop stops
//! running) closes it with an `IORING_OP_CLOSE` among the turn's other SQEs. A server that
//! takes a connection per request saves one system call per connection.
//!
//! The descriptor number stays taken until the kernel runs the close, so nothing can reuse
//! it meanwhile. A socket has no `flush`, so the kernel runs its close inline, while it
//! submits: the CQE is posted before that enter waits, and the wait asks for one more
//! completion per close it submits (see `Inner::enter`), as it does for tried sends.
//! Descriptors still queued when the driver closes, or that cannot be queued, are closed
//! with `close(2)`; those in flight are waited for like any op.

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;

use io_uring::{opcode, types};

use super::{Driver, Inner, CLOSE_USER_DATA};

/// The queue of descriptors to close at the next enter (see the module doc).
pub(crate) struct DeferredCloses {
    fds: RefCell<Vec<OwnedFd>>,
    /// `fds` is not empty: what every turn checks, one load rather than a borrow.
    queued: Cell<bool>,
    /// False once the driver began closing: descriptors are closed at once.
    open: Cell<bool>,
}

impl DeferredCloses {
    pub(super) fn new() -> DeferredCloses {
        DeferredCloses {
            fds: RefCell::new(Vec::new()),
            queued: Cell::new(false),
            open: Cell::new(true),
        }
    }

    /// Queues `fd` for the next enter, or closes it now if the driver is closing. Callable
    /// while the driver is borrowed (a reap that drops an op's last descriptor clone).
    pub(super) fn push(&self, fd: OwnedFd) {
        if self.open.get() {
            self.fds.borrow_mut().push(fd);
            self.queued.set(true);
        }
        // Otherwise `fd` drops here: `close(2)`.
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        !self.queued.get()
    }

    /// Everything queued so far, for the caller to submit (the queue's borrow is not held
    /// meanwhile, so closes queued while it submits go to the next batch).
    pub(super) fn take(&self) -> Vec<OwnedFd> {
        self.queued.set(false);
        std::mem::take(&mut *self.fds.borrow_mut())
    }

    /// Gives back the (emptied) vector `take` returned, keeping its allocation for the next
    /// batch unless closes were queued meanwhile.
    pub(super) fn recycle(&self, mut spent: Vec<OwnedFd>) {
        spent.clear();
        let mut fds = self.fds.borrow_mut();
        if fds.is_empty() && fds.capacity() < spent.capacity() {
            *fds = spent;
        }
    }

    /// The driver is closing: from now on descriptors are closed at once, and those queued
    /// are closed now.
    pub(super) fn shut(&self) {
        self.open.set(false);
        drop(self.take());
    }
}

impl Driver {
    /// Closes `fd` with the ring's next enter rather than with `close(2)` now (see `close`);
    /// at once if the driver is closing. For descriptors that have no `flush` (sockets),
    /// whose last user is gone: no op of ours may name it any more.
    pub(crate) fn defer_close(&self, fd: std::os::fd::OwnedFd) {
        self.0.closes.push(fd);
    }

    /// Submits the deferred closes now, if any: the loop stops running, and nothing says when
    /// it will enter the kernel again. A failure leaves them to the driver's close.
    pub(crate) fn flush_closes(&self) {
        if self.0.closes.is_empty() {
            return;
        }
        // Not borrowed when a loop stops being current; if it were, the next enter or the
        // driver's close would take them.
        if let Ok(mut inner) = self.0.inner.try_borrow_mut() {
            self.queue_closes(&mut inner);
            // An enter that fails (a signal, a transient error) leaves the closes in the SQ:
            // the next enter, or the driver's close, submits them, so nothing is lost by
            // ignoring the error here.
            let _ = inner.enter(0, None, 0);
        }
    }

    /// Puts the deferred closes into the SQ, for the enter that follows.
    #[inline]
    pub(super) fn queue_closes(&self, inner: &mut Inner) {
        if !self.0.closes.is_empty() {
            self.queue_closes_slow(inner);
        }
    }

    #[cold]
    #[inline(never)]
    fn queue_closes_slow(&self, inner: &mut Inner) {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let mut batch = self.0.closes.take();
        for fd in batch.drain(..) {
            let sqe = opcode::Close::new(types::Fd(fd.as_raw_fd()))
                .build()
                .user_data(CLOSE_USER_DATA);
            // Counted before the push: a full SQ submits (and may reap) inside it.
            inner.closes_in_flight += 1;
            inner.closes_queued += 1;
            if inner.push(sqe).is_ok() {
                // The kernel closes it now; the number stays taken until it does.
                let _ = fd.into_raw_fd();
            } else {
                // No ring: `fd` drops here, with `close(2)`.
                inner.closes_in_flight -= 1;
                inner.closes_queued = inner.closes_queued.saturating_sub(1);
            }
        }
        self.0.closes.recycle(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A descriptor of our own: one end of a new pipe, with its inode, which no other
    /// test's descriptor shares even if it reuses the number.
    fn new_fd() -> (OwnedFd, u64) {
        let (r, _w) = std::io::pipe().unwrap();
        let fd = OwnedFd::from(r);
        let ino = inode(fd.as_raw_fd()).unwrap();
        (fd, ino)
    }

    fn inode(fd: i32) -> Option<u64> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one `stat` into `st`, which is large enough; it is read only
        // if the call succeeded.
        (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0)
            .then(|| unsafe { st.assume_init() }.st_ino)
    }

    /// Whether `fd` is still the descriptor with inode `ino`.
    fn still_open(fd: i32, ino: u64) -> bool {
        inode(fd) == Some(ino)
    }

    #[test]
    fn a_queued_descriptor_stays_open_until_taken_and_dropped() {
        let q = DeferredCloses::new();
        let (fd, ino) = new_fd();
        let raw = fd.as_raw_fd();
        q.push(fd);
        assert!(!q.is_empty());
        assert!(still_open(raw, ino), "queued, not closed");
        let taken = q.take();
        assert!(q.is_empty());
        assert_eq!(taken.len(), 1);
        drop(taken);
        assert!(!still_open(raw, ino));
    }

    #[test]
    fn once_shut_queued_descriptors_close_and_new_ones_close_at_once() {
        let q = DeferredCloses::new();
        let (a, a_ino) = new_fd();
        let a_raw = a.as_raw_fd();
        q.push(a);
        q.shut();
        assert!(
            !still_open(a_raw, a_ino),
            "a queued descriptor is closed when the driver closes"
        );
        let (b, b_ino) = new_fd();
        let b_raw = b.as_raw_fd();
        q.push(b);
        assert!(q.is_empty());
        assert!(
            !still_open(b_raw, b_ino),
            "after shut, a descriptor is closed at once"
        );
    }

    #[test]
    fn recycle_keeps_closes_queued_meanwhile() {
        let q = DeferredCloses::new();
        q.push(new_fd().0);
        let batch = q.take();
        let (late, late_ino) = new_fd();
        let late_raw = late.as_raw_fd();
        q.push(late);
        q.recycle(batch);
        assert!(
            !q.is_empty(),
            "a close queued while a batch was out is kept"
        );
        assert!(still_open(late_raw, late_ino));
    }
}
