//! `UdpSocket`.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::ops::{Recv, RecvMsg, Send, SendMsg};
use super::{context, each_addr, nothing_resolved, resolve};
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

    /// Adopts a socket made with the standard library (switched to blocking mode: the ring,
    /// not `O_NONBLOCK`, makes its operations asynchronous).
    pub fn from_std(s: std::net::UdpSocket) -> io::Result<UdpSocket> {
        s.set_nonblocking(false)?;
        Ok(UdpSocket {
            fd: SharedFd::new(OwnedFd::from(s)),
        })
    }

    /// Hands the socket back to the standard library, in blocking mode, once no operation
    /// of the loop's uses it (operations of futures dropped earlier are cancelled then, and
    /// hold it until their completion). A datagram socket keeps nothing received in the
    /// loop: every receive is the caller's own.
    ///
    /// # Errors
    ///
    /// After a second, an operation of a dropped future still in the kernel; the socket is
    /// closed then.
    pub async fn into_std(self) -> io::Result<std::net::UdpSocket> {
        Ok(std::net::UdpSocket::from(
            super::release::release(self.fd).await?,
        ))
    }

    /// Sets the socket's default peer: [`send`](UdpSocket::send) goes there, and
    /// [`recv`](UdpSocket::recv) takes datagrams from it alone. A plain socket call (UDP has
    /// no handshake); each resolved address is tried in turn.
    ///
    /// # Errors
    ///
    /// The last address's error, naming it.
    pub fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let mut last = None;
        for a in resolve("connect", addr)? {
            match SockRef::from(&self.fd).connect(&a.into()) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(context(e, "connect to", a)),
            }
        }
        Err(last.unwrap_or_else(|| nothing_resolved("connect")))
    }

    /// Sends `buf[..len]` as one datagram to the peer set by [`connect`](UdpSocket::connect).
    ///
    /// # Errors
    ///
    /// `NotConnected` without a peer; the send's error (`ConnectionRefused` when an earlier
    /// datagram met a closed port, say).
    pub async fn send<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        let out = Op::new(Send {
            fd: self.fd.clone(),
            buf,
            offset: 0,
            zero_copy: false,
            wait_all: false,
        })
        .await;
        (out.result.map(|n| n as usize), out.data.buf)
    }

    /// Receives one datagram from the peer set by [`connect`](UdpSocket::connect) into
    /// `buf` (from its start, up to its capacity; its length is set to the datagram's size,
    /// truncated to the capacity).
    pub async fn recv<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        let out = Op::new(Recv {
            fd: self.fd.clone(),
            buf,
        })
        .await;
        finish_read(out.result, out.data.buf)
    }

    /// The peer set by [`connect`](UdpSocket::connect).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&self.fd)
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }

    /// Whether datagrams may be sent to broadcast addresses (`SO_BROADCAST`).
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        SockRef::from(&self.fd).set_broadcast(on)
    }

    /// Joins the IPv4 multicast group `group` on the interface with address `interface`
    /// (`Ipv4Addr::UNSPECIFIED`: the kernel picks one).
    pub fn join_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        SockRef::from(&self.fd).join_multicast_v4(&group, &interface)
    }

    /// Leaves the IPv4 multicast group `group` on `interface`.
    pub fn leave_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        SockRef::from(&self.fd).leave_multicast_v4(&group, &interface)
    }

    /// Joins the IPv6 multicast group `group` on the interface with index `interface` (0:
    /// the kernel picks one).
    pub fn join_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> io::Result<()> {
        SockRef::from(&self.fd).join_multicast_v6(&group, interface)
    }

    /// Leaves the IPv6 multicast group `group` on `interface`.
    pub fn leave_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> io::Result<()> {
        SockRef::from(&self.fd).leave_multicast_v6(&group, interface)
    }

    /// Whether multicast datagrams this socket sends come back to it on this host
    /// (`IP_MULTICAST_LOOP`; on by default).
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        SockRef::from(&self.fd).set_multicast_loop_v4(on)
    }

    /// How many hops this socket's multicast datagrams may take (`IP_MULTICAST_TTL`; 1 by
    /// default: this network only).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        SockRef::from(&self.fd).set_multicast_ttl_v4(ttl)
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

/// Takes ownership of a UDP socket's descriptor, switched to blocking mode (see
/// [`UdpSocket::from_std`]).
impl FromRawFd for UdpSocket {
    unsafe fn from_raw_fd(fd: RawFd) -> UdpSocket {
        UdpSocket {
            // SAFETY: the caller owns `fd`, an open socket, and gives it up (the trait's
            // contract).
            fd: SharedFd::new(unsafe { super::adopt(fd) }),
        }
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
