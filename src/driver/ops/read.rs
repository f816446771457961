//! `IORING_OP_READ` into an owned buffer.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use crate::buf::IoBufMut;
use crate::driver::OpCode;

/// Reads up to `buf.bytes_total()` bytes from `fd` at `offset` (`u64::MAX`: the file
/// position, as for pipes and sockets).
///
/// The caller keeps `fd` open until the op completes; the I/O types do this by holding their
/// descriptor in the op.
pub(crate) struct Read<B> {
    pub(crate) fd: RawFd,
    /// Written by the kernel until the final CQE.
    pub(crate) buf: B,
    pub(crate) offset: u64,
}

// SAFETY: the only pointer is `buf.stable_mut_ptr()`, which by `IoBufMut`'s contract stays
// valid and in place while `buf` lives, even when `Read` moves.
unsafe impl<B: IoBufMut> OpCode for Read<B> {
    fn sqe(&mut self) -> squeue::Entry {
        let len = u32::try_from(self.buf.bytes_total()).unwrap_or(u32::MAX);
        opcode::Read::new(types::Fd(self.fd), self.buf.stable_mut_ptr(), len)
            .offset(self.offset)
            .build()
    }
}
