//! The two receives behind `recv()`: `IORING_OP_RECV` with `IOSQE_BUFFER_SELECT` (the kernel
//! picks a buffer from the loop's pool when data arrives, so a waiting receive holds no
//! buffer), and, without a pool, `IORING_OP_RECV` into a heap buffer allocated for it. The
//! stream owns the one in flight (see `net::recv::Single`), so one orphaned here belongs to a
//! stream that is gone: its result is released, never read.

use std::io;

use io_uring::{cqueue, opcode, squeue, types};

use crate::buf::IoBufMut;
use crate::driver::bufring::{BufPool, RecvBuf, POOL_GROUP};
use crate::driver::completion::Completion;
use crate::driver::OpCode;
use crate::fd::SharedFd;

/// A receive result kept for the next `recv()`.
pub(crate) type Received = io::Result<RecvBuf>;

pub(crate) struct RecvSelect {
    pub(crate) fd: SharedFd,
    pub(crate) pool: BufPool,
    pub(crate) len: u32,
}

/// The common case of a receive's CQE: bytes in a buffer the kernel picked from the pool.
#[inline]
pub(crate) fn filled_buffer(pool: &BufPool, res: i32, flags: u32) -> Option<RecvBuf> {
    if res > 0 {
        if let Some(bid) = cqueue::buffer_select(flags) {
            return Some(pool.take(bid, res as u32));
        }
    }
    None
}

/// [`received`] for a raw CQE result, with the common case ([`filled_buffer`]) inline.
#[inline]
pub(crate) fn received_cqe(pool: &BufPool, res: i32, flags: u32) -> Option<Received> {
    if let Some(buf) = filled_buffer(pool, res, flags) {
        return Some(Ok(buf));
    }
    received(pool, Completion { res, flags }.result(), flags)
}

/// Turns a receive's result into what `recv()` returns: `None` if it carries nothing to
/// report (`ENOBUFS`, which the caller retries, or a cancellation). A buffer the kernel picked
/// for nothing goes straight back to the pool.
pub(crate) fn received(pool: &BufPool, result: io::Result<u32>, flags: u32) -> Option<Received> {
    let picked = cqueue::buffer_select(flags);
    match result {
        Ok(n) if n > 0 => Some(match picked {
            Some(bid) => Ok(pool.take(bid, n)),
            None => Err(io::Error::other(
                "the kernel reported received bytes without a buffer",
            )),
        }),
        other => {
            if let Some(bid) = picked {
                drop(pool.take(bid, 0));
            }
            match other {
                Ok(_) => Some(Ok(RecvBuf::eof())),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECANCELED)) => None,
                Err(e) => Some(Err(e)),
            }
        }
    }
}

// SAFETY: the SQE carries no buffer pointer: the kernel takes one from the pool's ring, whose
// memory the pool keeps alive until the group is unregistered.
unsafe impl OpCode for RecvSelect {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        opcode::Recv::new(types::Fd(self.fd.raw()), std::ptr::null_mut(), self.len)
            .buf_group(POOL_GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
    }

    fn release(&mut self, c: Completion) {
        // The stream is gone: a buffer the kernel picked goes back to the pool.
        drop(received(&self.pool, c.result(), c.flags));
    }
}

/// A receive into a heap buffer: the path where the kernel has no provided-buffer rings.
pub(crate) struct RecvOwned {
    pub(crate) fd: SharedFd,
    /// Written by the kernel until the CQE.
    pub(crate) buf: Vec<u8>,
}

impl RecvOwned {
    /// Turns the result into what `recv()` returns (`None` for a cancellation).
    pub(crate) fn received(&mut self, result: io::Result<u32>) -> Option<Received> {
        match result {
            Ok(0) => Some(Ok(RecvBuf::eof())),
            Ok(n) => {
                let mut v = std::mem::take(&mut self.buf);
                // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
                unsafe { v.set_init((n as usize).min(v.capacity())) };
                Some(Ok(RecvBuf::owned(v)))
            }
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

// SAFETY: the only pointer is the Vec's heap block, which does not move with the op.
unsafe impl OpCode for RecvOwned {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let len = u32::try_from(self.buf.capacity()).unwrap_or(u32::MAX);
        opcode::Recv::new(types::Fd(self.fd.raw()), self.buf.as_mut_ptr(), len).build()
    }
}

/// `IORING_OP_RECV` with `IORING_RECV_MULTISHOT` (Linux 6.0+): armed once per stream, it
/// posts one CQE per chunk received, each in a buffer picked from the pool.
pub(crate) fn recv_multi_sqe(fd: &SharedFd) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd.raw()), POOL_GROUP).build()
}
