//! `IORING_OP_SEND_ZC` (Linux 6.0+): the kernel sends from the buffer without copying it,
//! then posts a second CQE (`IORING_CQE_F_NOTIF`) when it no longer needs the buffer.

use io_uring::{opcode, squeue, types};

use crate::buf::IoBuf;
use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct SendZc<B> {
    pub(crate) fd: SharedFd,
    /// Read by the kernel until the notification CQE, not just the result CQE.
    pub(crate) buf: B,
}

// SAFETY: the only pointer is `buf.stable_ptr()`, stable while `buf` lives (IoBuf); the op's
// slot is freed (and the buffer handed back) only after the final, notification CQE.
unsafe impl<B: IoBuf> OpCode for SendZc<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let len = u32::try_from(self.buf.bytes_init()).unwrap_or(u32::MAX);
        opcode::SendZc::new(types::Fd(self.fd.raw()), self.buf.stable_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    }
}
