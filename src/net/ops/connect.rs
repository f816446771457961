//! `IORING_OP_CONNECT`.

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Connect {
    pub(crate) fd: SharedFd,
    /// Read by the kernel; boxed so it stays put when the op moves.
    pub(crate) addr: Box<SockAddr>,
}

// SAFETY: the SQE points at the boxed address, owned by this op and fixed on the heap.
unsafe impl OpCode for Connect {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        opcode::Connect::new(
            types::Fd(self.fd.raw()),
            self.addr.as_ptr().cast(),
            self.addr.len(),
        )
        .build()
    }
}
