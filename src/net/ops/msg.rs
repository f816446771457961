//! `IORING_OP_SENDMSG` / `IORING_OP_RECVMSG` for datagrams with an address.

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use super::accept::AddrBuf;
use crate::buf::{IoBuf, IoBufMut};
use crate::driver::OpCode;
use crate::fd::SharedFd;

/// The msghdr and iovec the kernel reads. Boxed together; the pointers inside point into the
/// same box or at the op's buffer and address, all of which stay put while the op lives.
pub(crate) struct MsgHdr {
    hdr: libc::msghdr,
    iov: libc::iovec,
}

impl MsgHdr {
    fn new() -> Box<MsgHdr> {
        // SAFETY: msghdr and iovec are plain old data; all-zero is valid (null pointers, 0s).
        Box::new(unsafe { std::mem::zeroed() })
    }
}

pub(crate) struct SendMsg<B> {
    pub(crate) fd: SharedFd,
    /// Read by the kernel until the CQE.
    pub(crate) buf: B,
    /// Read by the kernel; boxed.
    pub(crate) to: Box<SockAddr>,
    msg: Box<MsgHdr>,
}

impl<B: IoBuf> SendMsg<B> {
    pub(crate) fn new(fd: SharedFd, buf: B, to: SockAddr) -> SendMsg<B> {
        SendMsg {
            fd,
            buf,
            to: Box::new(to),
            msg: MsgHdr::new(),
        }
    }
}

// SAFETY: the SQE points at `msg.hdr`, whose iovec points at `msg.iov` (same box), which
// points at `buf.stable_ptr()` (stable by IoBuf), and whose name points at the boxed `to`.
unsafe impl<B: IoBuf> OpCode for SendMsg<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let m = &mut *self.msg;
        m.iov.iov_base = self.buf.stable_ptr() as *mut libc::c_void;
        m.iov.iov_len = self.buf.bytes_init();
        m.hdr.msg_iov = &mut m.iov;
        m.hdr.msg_iovlen = 1;
        m.hdr.msg_name = self.to.as_ptr() as *mut libc::c_void;
        m.hdr.msg_namelen = self.to.len();
        opcode::SendMsg::new(types::Fd(self.fd.raw()), &m.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    }
}

pub(crate) struct RecvMsg<B> {
    pub(crate) fd: SharedFd,
    /// Written by the kernel until the CQE.
    pub(crate) buf: B,
    /// The sender's address, written by the kernel; boxed.
    pub(crate) from: Box<AddrBuf>,
    msg: Box<MsgHdr>,
}

impl<B: IoBufMut> RecvMsg<B> {
    pub(crate) fn new(fd: SharedFd, buf: B) -> RecvMsg<B> {
        RecvMsg {
            fd,
            buf,
            from: AddrBuf::new(),
            msg: MsgHdr::new(),
        }
    }

    /// The sender's address, once the op succeeded.
    pub(crate) fn sender(&self) -> SockAddr {
        let mut a = AddrBuf::new();
        a.storage = self.from.storage;
        a.len = self.msg.hdr.msg_namelen;
        a.to_sockaddr()
    }
}

// SAFETY: as for SendMsg; the kernel writes into the buffer (IoBufMut) and the boxed address
// storage, and updates `msg.hdr.msg_namelen` in the boxed header.
unsafe impl<B: IoBufMut> OpCode for RecvMsg<B> {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        let m = &mut *self.msg;
        m.iov.iov_base = self.buf.stable_mut_ptr().cast();
        m.iov.iov_len = self.buf.bytes_total();
        m.hdr.msg_iov = &mut m.iov;
        m.hdr.msg_iovlen = 1;
        m.hdr.msg_name = (&mut self.from.storage as *mut libc::sockaddr_storage).cast();
        m.hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        opcode::RecvMsg::new(types::Fd(self.fd.raw()), &mut m.hdr).build()
    }
}
