//! `IORING_OP_STATX` on an open file.

use io_uring::{opcode, squeue, types};

use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Statx {
    pub(crate) fd: SharedFd,
    /// Written by the kernel until the CQE; boxed so it stays put.
    pub(crate) buf: Box<libc::statx>,
}

impl Statx {
    pub(crate) fn new(fd: SharedFd) -> Statx {
        Statx {
            fd,
            // SAFETY: statx is plain old data; all-zero is a valid value.
            buf: Box::new(unsafe { std::mem::zeroed() }),
        }
    }
}

/// The empty path that, with `AT_EMPTY_PATH`, makes statx describe `dirfd` itself.
static EMPTY: &std::ffi::CStr = c"";

// SAFETY: the pointers are a 'static empty C string and the boxed statx owned by this op.
unsafe impl OpCode for Statx {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        opcode::Statx::new(
            types::Fd(self.fd.raw()),
            EMPTY.as_ptr(),
            (&mut *self.buf as *mut libc::statx).cast(),
        )
        .flags(libc::AT_EMPTY_PATH)
        .mask(libc::STATX_BASIC_STATS)
        .build()
    }
}
