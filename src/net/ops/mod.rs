//! Socket operations, named after their opcodes. One op per file. Each holds a clone of its
//! socket's descriptor (see `SharedFd`) and everything the kernel reads or writes, on the heap.

mod accept;
mod connect;
mod msg;
mod recv;
mod recv_select;
mod send;
mod shutdown;
mod stash;

pub(crate) use accept::{accept_multi_sqe, Accept, AcceptKeep, Accepted};
pub(crate) use recv_select::{
    filled_buffer, received, received_cqe, recv_multi_sqe, RecvOwned, RecvSelect,
};
pub(crate) use stash::Stash;

/// Boxed storage for an accepted peer's address.
pub(crate) fn accept_addr_buf() -> Box<accept::AddrBuf> {
    accept::AddrBuf::new()
}
pub(crate) use connect::Connect;
pub(crate) use msg::{RecvMsg, SendMsg};
pub(crate) use recv::Recv;
pub(crate) use send::Send;
pub(crate) use shutdown::Shutdown;
