//! `IORING_OP_ACCEPT`: single-shot, with a stash that makes `accept()` cancel-safe, and
//! multishot (`IORING_ACCEPT_MULTISHOT`), whose CQEs queue in the loop's op table.

use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use super::Stash;
use crate::driver::completion::{Completion, Orphan};
use crate::driver::OpCode;
use crate::fd::SharedFd;

/// A connection the kernel accepted, with its peer address where it was asked for or came
/// for free (a single-shot accept's).
pub(crate) struct Accepted {
    pub(crate) fd: OwnedFd,
    pub(crate) addr: Option<SockAddr>,
}

/// Storage the kernel writes the peer address into. Boxed: it must not move with the op.
pub(crate) struct AddrBuf {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl AddrBuf {
    pub(crate) fn new() -> Box<AddrBuf> {
        Box::new(AddrBuf {
            // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        })
    }

    pub(crate) fn to_sockaddr(&self) -> SockAddr {
        let mut storage = socket2::SockAddrStorage::zeroed();
        // SAFETY: `SockAddrStorage` is a transparent wrapper of `sockaddr_storage`.
        *unsafe { storage.view_as::<libc::sockaddr_storage>() } = self.storage;
        let len = self
            .len
            .min(std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        // SAFETY: the kernel filled the storage with an address of `len` bytes (clamped to the
        // storage size) when the op succeeded; before that it is zeroed (family AF_UNSPEC).
        unsafe { SockAddr::new(storage, len) }
    }
}

pub(crate) struct Accept {
    pub(crate) fd: SharedFd,
    /// Written by the kernel until the CQE.
    pub(crate) addr: Box<AddrBuf>,
    /// Where a connection goes if nobody waits for it any more.
    pub(crate) stash: std::sync::Arc<Stash<Accepted>>,
}

impl Accept {
    /// Turns a successful result into an owned connection.
    pub(crate) fn accepted(&self, res: u32) -> Accepted {
        // SAFETY: a successful accept returns a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(res as i32) };
        Accepted {
            fd,
            addr: Some(self.addr.to_sockaddr()),
        }
    }
}

// SAFETY: the SQE points at `addr.storage` and `addr.len`, inside a Box owned by this op,
// which stays put when the op moves.
unsafe impl OpCode for Accept {
    fn sqe(&mut self) -> squeue::Entry {
        self.fd.claim();
        opcode::Accept::new(
            types::Fd(self.fd.raw()),
            (&mut self.addr.storage as *mut libc::sockaddr_storage).cast(),
            &mut self.addr.len,
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
    }

    fn release(&mut self, c: Completion) {
        if let Ok(res) = c.result() {
            let a = self.accepted(res);
            self.stash.push(a);
        }
    }
}

/// `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT` (Linux 5.19+): armed once per listener,
/// it posts one CQE per connection. The kernel writes no peer address for it.
pub(crate) fn accept_multi_sqe(fd: &SharedFd) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(fd.raw()))
        .flags(libc::SOCK_CLOEXEC)
        .build()
}

/// What an armed multishot accept keeps for its whole life: the listening descriptor. A
/// connection nobody took (the listener was dropped) is closed here.
pub(crate) struct AcceptKeep {
    /// Held, not read: keeps the descriptor open until the final CQE.
    #[allow(dead_code)]
    pub(crate) fd: SharedFd,
}

impl Orphan for AcceptKeep {
    fn release(&mut self, c: Completion) {
        if let Ok(res) = c.result() {
            // SAFETY: a successful accept returns a new descriptor that nobody else owns;
            // this CQE was never handed out, so closing it here is its only use.
            drop(unsafe { OwnedFd::from_raw_fd(res as i32) });
        }
    }
}
