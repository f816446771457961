//! `UdpSocket`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::ops::{RecvMsg, SendMsg};
use super::{context, each_addr};
use crate::buf::{finish_read, BufResult, IoBuf, IoBufMut};
use crate::driver::Op;
use crate::fd::SharedFd;

/// A UDP socket.
pub struct UdpSocket {
    fd: SharedFd,
}

impl UdpSocket {
    /// Binds to `addr`. A plain socket call: works outside a loop.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        each_addr("bind", addr, |a| {
            let sock = Socket::new(Domain::for_address(a), Type::DGRAM, Some(Protocol::UDP))?;
            sock.bind(&a.into()).map_err(|e| context(e, "bind", a))?;
            Ok(UdpSocket {
                fd: SharedFd::new(OwnedFd::from(sock)),
            })
        })
    }

    /// Sends `buf[..len]` as one datagram to `to`.
    pub async fn send_to<B: IoBuf>(&self, buf: B, to: SocketAddr) -> BufResult<usize, B> {
        let out = Op::new(SendMsg::new(self.fd.clone(), buf, to.into())).await;
        (out.result.map(|n| n as usize), out.data.buf)
    }

    /// Receives one datagram into `buf` (from its start, up to its capacity; its length is
    /// set to the datagram's size, truncated to the capacity) and the sender's address.
    pub async fn recv_from<B: IoBufMut>(&self, buf: B) -> BufResult<(usize, SocketAddr), B> {
        let out = Op::new(RecvMsg::new(self.fd.clone(), buf)).await;
        let sender = out.data.sender();
        let (r, buf) = finish_read(out.result, out.data.buf);
        let r = r.and_then(|n| match sender.as_socket() {
            Some(addr) => Ok((n, addr)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from a non-IP address",
            )),
        });
        (r, buf)
    }

    /// The address this socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&self.fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }
}

/// The socket's descriptor, borrowed: `socket2::SockRef::from(&socket)` sets any option
/// (keepalive, buffer sizes, linger) without `unsafe`.
impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.fd.raw())
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}
