//! `IORING_OP_SHUTDOWN`.

use io_uring::{opcode, squeue, types};

use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Shutdown {
    pub(crate) fd: SharedFd,
    pub(crate) how: i32,
}

// SAFETY: a shutdown SQE carries no pointers.
unsafe impl OpCode for Shutdown {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        opcode::Shutdown::new(types::Fd(self.fd.raw()), self.how).build()
    }
}
