//! `IORING_OP_CLOSE`.

use std::os::fd::{IntoRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use crate::driver::OpCode;

pub(crate) struct Close {
    fd: RawFd,
}

impl Close {
    /// Takes ownership of `fd`: the kernel closes it.
    pub(crate) fn new(fd: OwnedFd) -> Close {
        Close {
            fd: fd.into_raw_fd(),
        }
    }
}

// SAFETY: a close SQE carries no pointers.
unsafe impl OpCode for Close {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::Close::new(types::Fd(self.fd)).build()
    }
}
