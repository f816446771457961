//! `IORING_OP_READ` / `IORING_OP_WRITE` at an offset, on owned buffers.

use io_uring::{opcode, squeue, types};

use crate::buf::{IoBuf, IoBufMut};
use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct ReadAt<B> {
    pub(crate) fd: SharedFd,
    /// Written by the kernel until the CQE.
    pub(crate) buf: B,
    pub(crate) pos: u64,
}

// SAFETY: the only pointer is `buf.stable_mut_ptr()`, stable while `buf` lives (IoBufMut).
unsafe impl<B: IoBufMut> OpCode for ReadAt<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let len = u32::try_from(self.buf.bytes_total()).unwrap_or(u32::MAX);
        opcode::Read::new(types::Fd(self.fd.raw()), self.buf.stable_mut_ptr(), len)
            .offset(self.pos)
            .build()
    }
}

pub(crate) struct WriteAt<B> {
    pub(crate) fd: SharedFd,
    /// Read by the kernel until the CQE.
    pub(crate) buf: B,
    pub(crate) pos: u64,
}

// SAFETY: the only pointer is `buf.stable_ptr()`, stable while `buf` lives (IoBuf).
unsafe impl<B: IoBuf> OpCode for WriteAt<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let len = u32::try_from(self.buf.bytes_init()).unwrap_or(u32::MAX);
        opcode::Write::new(types::Fd(self.fd.raw()), self.buf.stable_ptr(), len)
            .offset(self.pos)
            .build()
    }
}
