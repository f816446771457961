//! `IORING_OP_RECV` into an owned buffer.

use io_uring::{opcode, squeue, types};

use crate::buf::IoBufMut;
use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Recv<B> {
    pub(crate) fd: SharedFd,
    /// Written by the kernel until the CQE.
    pub(crate) buf: B,
}

// SAFETY: the only pointer is `buf.stable_mut_ptr()`, stable while `buf` lives (IoBufMut).
unsafe impl<B: IoBufMut> OpCode for Recv<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let len = u32::try_from(self.buf.bytes_total()).unwrap_or(u32::MAX);
        opcode::Recv::new(types::Fd(self.fd.raw()), self.buf.stable_mut_ptr(), len).build()
    }
}
