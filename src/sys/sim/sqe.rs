//! An SQE as the simulated kernel reads it: the fields of `struct io_uring_sqe` it acts on.

use io_uring::{opcode, squeue};

/// `IOSQE_BUFFER_SELECT`: the op takes its buffer from a provided-buffer ring.
const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
/// `IOSQE_CQE_SKIP_SUCCESS`: a success posts no CQE.
const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;
/// `IORING_RECV_MULTISHOT`, in `ioprio`.
const IORING_RECV_MULTISHOT: u16 = 1 << 1;
/// `IORING_ACCEPT_MULTISHOT`, in `ioprio`.
const IORING_ACCEPT_MULTISHOT: u16 = 1 << 0;
/// `IORING_POLL_ADD_MULTI`, in `len` of a POLL_ADD.
const IORING_POLL_ADD_MULTI: u32 = 1 << 0;

/// What the simulated kernel does with an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Nop,
    /// READ or RECV into `addr..addr + len` (or a pool buffer, with `buffer_select`).
    Read,
    /// WRITE or SEND from `addr..addr + len`.
    Write,
    /// SENDMSG: `addr` is a `msghdr`.
    SendMsg,
    /// SEND_ZC: a result CQE, then a notification once the buffer is free again.
    SendZc,
    /// The loop's timer: `addr` is a timespec the kernel copies at submission.
    Timeout,
    /// TIMEOUT_REMOVE with `IORING_TIMEOUT_UPDATE`: `addr` names the timer to move, `off`
    /// points at its new timespec.
    TimeoutUpdate,
    /// ASYNC_CANCEL of the op whose `user_data` is `addr`.
    Cancel,
    Close,
    /// A readiness watch; it completes only when cancelled.
    Poll,
    /// ACCEPT: a new descriptor; `addr`/`off` point at the peer's address and its length
    /// for a single-shot one.
    Accept,
    /// An op the simulation does not model: it fails with `EOPNOTSUPP`.
    Other(u8),
}

/// The fields of one SQE that the simulation reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sqe {
    pub(crate) kind: Kind,
    pub(crate) fd: i32,
    pub(crate) addr: u64,
    pub(crate) off: u64,
    pub(crate) len: u32,
    pub(crate) user_data: u64,
    pub(crate) buffer_select: bool,
    pub(crate) buf_group: u16,
    pub(crate) multishot: bool,
    /// A send tried at submit (`MSG_DONTWAIT`): the kernel ends it while submitting it.
    pub(crate) tried: bool,
    /// A send with `MSG_WAITALL`: a short one is a failure.
    pub(crate) wait_all: bool,
    /// `IOSQE_CQE_SKIP_SUCCESS`.
    pub(crate) skip_success: bool,
}

impl Sqe {
    pub(crate) fn decode(e: &squeue::Entry) -> Sqe {
        // SAFETY: `squeue::Entry` is `#[repr(C)]` around `struct io_uring_sqe`, 64 bytes with
        // no padding, and the crate's builders start from an all-zero SQE: every byte is
        // initialised, so reading them as bytes is sound.
        let raw: [u8; 64] = unsafe { std::mem::transmute_copy(e) };
        let u16_at = |i: usize| u16::from_ne_bytes([raw[i], raw[i + 1]]);
        let u32_at = |i: usize| u32::from_ne_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_ne_bytes(raw[i..i + 8].try_into().expect("8 bytes"));
        let code = raw[0];
        let flags = raw[1];
        let ioprio = u16_at(2);
        let len = u32_at(24);
        let msg_flags = u32_at(28);
        let kind = match code {
            opcode::Nop::CODE => Kind::Nop,
            opcode::Read::CODE | opcode::Recv::CODE => Kind::Read,
            opcode::Write::CODE | opcode::Send::CODE => Kind::Write,
            opcode::SendMsg::CODE => Kind::SendMsg,
            opcode::SendZc::CODE => Kind::SendZc,
            opcode::Timeout::CODE => Kind::Timeout,
            opcode::TimeoutRemove::CODE => Kind::TimeoutUpdate,
            opcode::AsyncCancel::CODE => Kind::Cancel,
            opcode::Close::CODE => Kind::Close,
            opcode::PollAdd::CODE => Kind::Poll,
            opcode::Accept::CODE => Kind::Accept,
            c => Kind::Other(c),
        };
        let multishot = match kind {
            Kind::Read => code == opcode::Recv::CODE && ioprio & IORING_RECV_MULTISHOT != 0,
            Kind::Poll => len & IORING_POLL_ADD_MULTI != 0,
            Kind::Accept => ioprio & IORING_ACCEPT_MULTISHOT != 0,
            _ => false,
        };
        Sqe {
            kind,
            fd: u32_at(4) as i32,
            off: u64_at(8),
            addr: u64_at(16),
            len,
            user_data: u64_at(32),
            buffer_select: flags & IOSQE_BUFFER_SELECT != 0,
            buf_group: u16_at(40),
            multishot,
            tried: matches!(kind, Kind::Write | Kind::SendMsg)
                && msg_flags & libc::MSG_DONTWAIT as u32 != 0,
            wait_all: matches!(kind, Kind::Write | Kind::SendMsg)
                && msg_flags & libc::MSG_WAITALL as u32 != 0,
            skip_success: flags & IOSQE_CQE_SKIP_SUCCESS != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::types;

    #[test]
    fn sim_decodes_the_fields_the_kernel_acts_on() {
        let mut buf = [0u8; 16];
        let e = opcode::Read::new(types::Fd(7), buf.as_mut_ptr(), 16)
            .offset(3)
            .build()
            .user_data(42);
        let s = Sqe::decode(&e);
        assert_eq!(s.kind, Kind::Read);
        assert_eq!((s.fd, s.len, s.off, s.user_data), (7, 16, 3, 42));
        assert_eq!(s.addr, buf.as_mut_ptr() as u64);
        assert!(!s.buffer_select && !s.multishot);

        let e = opcode::RecvMulti::new(types::Fd(9), 5).build().user_data(1);
        let s = Sqe::decode(&e);
        assert_eq!(s.kind, Kind::Read);
        assert!(s.buffer_select && s.multishot);
        assert_eq!(s.buf_group, 5);

        let e = opcode::AsyncCancel::new(77).build();
        let s = Sqe::decode(&e);
        assert_eq!((s.kind, s.addr), (Kind::Cancel, 77));
    }
}
