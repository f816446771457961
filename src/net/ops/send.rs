//! `IORING_OP_SEND` and `IORING_OP_SEND_ZC` (Linux 6.0+) from an owned buffer, starting at an
//! offset so a short send is resumed by resubmitting the same op data.
//!
//! A zero-copy send posts two CQEs: the result, then (`IORING_CQE_F_NOTIF`) the notice that
//! the kernel no longer reads the buffer. The op table resolves the future with the first
//! once the second has arrived, so the buffer is handed back only when the kernel is done.

use io_uring::{opcode, squeue, types};

use crate::buf::IoBuf;
use crate::driver::OpCode;
use crate::fd::SharedFd;

pub(crate) struct Send<B> {
    pub(crate) fd: SharedFd,
    /// Read by the kernel until the final CQE (for SEND_ZC, the notification).
    pub(crate) buf: B,
    /// Bytes of `buf` already sent; the SQE sends `buf[offset..bytes_init]`.
    pub(crate) offset: usize,
    /// Use SEND_ZC rather than a copying send.
    pub(crate) zero_copy: bool,
    /// Send all of it (`MSG_WAITALL`, stream sockets): where the socket's buffer takes only
    /// part, the kernel sends the rest as room frees up, and posts one CQE for the whole
    /// (short only on an error after some progress), rather than one per part, each a turn
    /// of the loop and a new SQE. Kernels before 5.19 ignore the flag and post short counts,
    /// which `write_all` resumes.
    pub(crate) wait_all: bool,
}

impl<B: IoBuf> Send<B> {
    /// Bytes still to send.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.bytes_init().saturating_sub(self.offset)
    }
}

// SAFETY: the only pointer is `buf.stable_ptr() + offset` with `offset <= bytes_init`, inside
// the buffer and stable while `buf` lives (IoBuf); the slot keeps `buf` until the final CQE,
// which for SEND_ZC is the notification.
unsafe impl<B: IoBuf> OpCode for Send<B> {
    fn sqe(&mut self) -> squeue::Entry {
        let init = self.buf.bytes_init();
        let offset = self.offset.min(init);
        let len = u32::try_from(init - offset).unwrap_or(u32::MAX);
        // SAFETY: `offset <= bytes_init <= bytes_total`: the result points into (or one past
        // the end of) the buffer's block.
        let ptr = unsafe { self.buf.stable_ptr().add(offset) };
        let fd = types::Fd(self.fd.raw());
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, never a process-killing SIGPIPE.
        let flags = if self.wait_all {
            libc::MSG_NOSIGNAL | libc::MSG_WAITALL
        } else {
            libc::MSG_NOSIGNAL
        };
        if self.zero_copy {
            opcode::SendZc::new(fd, ptr, len).flags(flags).build()
        } else {
            opcode::Send::new(fd, ptr, len).flags(flags).build()
        }
    }
}
