//! `IORING_OP_OPENAT`.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use crate::driver::completion::Completion;
use crate::driver::OpCode;

pub(crate) struct OpenAt {
    /// Read by the kernel until the CQE; a CString's bytes live on the heap.
    pub(crate) path: CString,
    pub(crate) flags: i32,
    pub(crate) mode: libc::mode_t,
}

// SAFETY: the only pointer is the CString's heap buffer, owned by this op.
unsafe impl OpCode for OpenAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(self.flags | libc::O_CLOEXEC)
            .mode(self.mode)
            .build()
    }

    fn release(&mut self, c: Completion) {
        // Opened for a future that was dropped: close it rather than leak it.
        if let Ok(fd) = c.result() {
            // SAFETY: a successful open returns a new descriptor nobody else owns.
            drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
    }
}
