//! `IORING_OP_CLOSE`.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use crate::driver::completion::Completion;
use crate::driver::OpCode;

/// Closes a descriptor on the ring. It owns the descriptor until the kernel has closed it
/// (a CQE came, whatever its result: Linux releases the descriptor even when close reports
/// an error); dropped before that (never submitted, or the submission failed), it closes
/// the descriptor itself, so it never leaks.
pub(crate) struct Close {
    /// `None` once the kernel has closed it.
    fd: Option<OwnedFd>,
}

impl Close {
    /// Takes ownership of `fd`: the kernel closes it, or this op's drop does.
    pub(crate) fn new(fd: OwnedFd) -> Close {
        Close { fd: Some(fd) }
    }

    fn kernel_closed(&mut self) {
        // The number is no longer ours: give it up without closing it again.
        if let Some(fd) = self.fd.take() {
            let _ = fd.into_raw_fd();
        }
    }
}

// SAFETY: a close SQE carries no pointers.
unsafe impl OpCode for Close {
    fn sqe(&mut self) -> squeue::Entry {
        let fd = self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        opcode::Close::new(types::Fd(fd)).build()
    }

    fn release(&mut self, _c: Completion) {
        self.kernel_closed();
    }

    fn completed(&mut self) {
        self.kernel_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, RawFd};

    /// A descriptor numbered `min` or more, which no other test's opens (lowest free number
    /// first) will take meanwhile; each test here passes its own `min`.
    fn high_fd(min: RawFd) -> RawFd {
        let f = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: `f` is a valid descriptor; F_DUPFD_CLOEXEC makes a new one we own.
        let fd = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        assert!(fd >= min);
        fd
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    #[test]
    fn a_close_never_submitted_closes_its_descriptor() {
        let fd = high_fd(2000);
        // SAFETY: `fd` was just made and nothing else owns it.
        let op = Close::new(unsafe { OwnedFd::from_raw_fd(fd) });
        drop(op);
        assert!(!is_open(fd), "the descriptor leaked");
    }

    #[test]
    fn a_close_the_kernel_completed_is_not_closed_again() {
        let fd = high_fd(3000);
        // SAFETY: as above.
        let mut op = Close::new(unsafe { OwnedFd::from_raw_fd(fd) });
        op.completed();
        drop(op);
        // Had it closed the number again, it would have closed whatever reused it.
        assert!(is_open(fd));
        // SAFETY: still ours (the kernel did not really close it in this test).
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
