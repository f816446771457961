//! `IORING_OP_FSYNC`.

use io_uring::{opcode, squeue, types};

use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Fsync {
    pub(crate) fd: SharedFd,
    /// `fdatasync` rather than `fsync`.
    pub(crate) data_only: bool,
}

// SAFETY: an fsync SQE carries no pointers.
unsafe impl OpCode for Fsync {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let flags = if self.data_only {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        opcode::Fsync::new(types::Fd(self.fd.raw()))
            .flags(flags)
            .build()
    }
}
