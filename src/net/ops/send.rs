//! `IORING_OP_SEND` from an owned buffer.

use io_uring::{opcode, squeue, types};

use crate::buf::IoBuf;
use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Send<B> {
    pub(crate) fd: SharedFd,
    /// Read by the kernel until the CQE.
    pub(crate) buf: B,
}

// SAFETY: the only pointer is `buf.stable_ptr()`, stable while `buf` lives (IoBuf).
unsafe impl<B: IoBuf> OpCode for Send<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let len = u32::try_from(self.buf.bytes_init()).unwrap_or(u32::MAX);
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, never a process-killing SIGPIPE.
        opcode::Send::new(types::Fd(self.fd.raw()), self.buf.stable_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }
}
