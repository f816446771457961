//! `TcpListener` and `TcpStream`.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::acceptor::Acceptor;
use super::ops::Connect;
use super::stream::{stream_methods, Stream};
use super::write_queue::Sender;
use super::{context, each_addr, nothing_resolved, resolve, ListenOptions};
use crate::buf::IoBuf;
use crate::driver::Op;
use crate::fd::SharedFd;

/// A TCP socket accepting connections.
pub struct TcpListener {
    acceptor: Acceptor,
}

impl TcpListener {
    /// Binds to `addr` with `SO_REUSEADDR` and listens. A plain socket call: works outside a
    /// loop.
    ///
    /// # Errors
    ///
    /// The bind error (`AddrInUse`, `AddrNotAvailable`, ...), naming the address.
    /// [`ListenOptions`] sets the backlog.
    pub fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        bind_with(addr, &ListenOptions::new())
    }

    /// Binds like [`bind`](TcpListener::bind), adding `SO_REUSEPORT` so that several
    /// listeners (one per loop, one loop per core) share the port and the kernel spreads
    /// connections across them.
    pub fn bind_reuseport(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        bind_with(addr, &ListenOptions::new().reuseport(true))
    }

    /// Adopts a listener made with the standard library (switched to blocking mode: the ring,
    /// not `O_NONBLOCK`, makes its operations asynchronous).
    pub fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(false)?;
        Ok(TcpListener::from_fd(OwnedFd::from(l)))
    }

    /// A listener over `fd`, a listening socket in blocking mode.
    pub(crate) fn from_fd(fd: OwnedFd) -> TcpListener {
        TcpListener {
            acceptor: Acceptor::new(SharedFd::new(fd)),
        }
    }

    /// Hands the listener back to the standard library (blocking mode), with the
    /// connections the loop had already accepted that no `accept` returned: with a
    /// multishot accept armed (Linux 5.19+) the kernel takes connections ahead of the
    /// caller, and they would otherwise be lost. Those still in the listen backlog are the
    /// returned listener's.
    ///
    /// # Errors
    ///
    /// After a second, an operation of a dropped future still in the kernel; the socket is
    /// closed then.
    pub async fn into_std(self) -> io::Result<(std::net::TcpListener, Vec<std::net::TcpStream>)> {
        let (fd, accepted) = self.acceptor.into_fd().await?;
        Ok((
            std::net::TcpListener::from(fd),
            accepted
                .into_iter()
                .map(std::net::TcpStream::from)
                .collect(),
        ))
    }

    /// Waits for a connection. Cancel-safe: a connection accepted for a dropped `accept`
    /// future is returned by the next call.
    ///
    /// # Errors
    ///
    /// The accept error. After `EMFILE`/`ENFILE` (out of descriptors) the next call first
    /// waits a short back-off, so a server that retries at once does not spin.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let a = self.acceptor.accept(true).await?;
        let addr = a.addr.as_ref().and_then(|a| a.as_socket()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "accepted a non-IP peer address")
        })?;
        Ok((TcpStream::from_fd(a.fd), addr))
    }

    /// Waits for a connection, like [`accept`](TcpListener::accept), without its peer's
    /// address. The kernel reports none for a multishot accept, so `accept` asks for it
    /// with a `getpeername(2)` per connection; a server that does not log or filter by
    /// address saves that call. [`TcpStream::peer_addr`] still answers later.
    ///
    /// One difference: a peer that reset before the connection was taken is returned, and
    /// its first read reports the reset (`accept` skips it, having no address to give).
    ///
    /// # Errors
    ///
    /// As [`accept`](TcpListener::accept).
    pub async fn accept_stream(&self) -> io::Result<TcpStream> {
        let a = self.acceptor.accept(false).await?;
        Ok(TcpStream::from_fd(a.fd))
    }

    /// Sets `TCP_NODELAY` on the listener, which Linux copies to every connection accepted
    /// afterwards: they start with Nagle's algorithm off, without a `setsockopt(2)` each
    /// ([`TcpStream::set_nodelay`] still sets it per stream). [`ListenOptions::nodelay`]
    /// sets it at bind time.
    ///
    /// [`ListenOptions::nodelay`]: super::ListenOptions::nodelay
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        SockRef::from(&self.acceptor.fd).set_tcp_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set on the listener (see
    /// [`set_nodelay`](TcpListener::set_nodelay)).
    pub fn nodelay(&self) -> io::Result<bool> {
        SockRef::from(&self.acceptor.fd).tcp_nodelay()
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr(&self.acceptor.fd)
    }
}

pub(super) fn bind_with(addr: impl ToSocketAddrs, opts: &ListenOptions) -> io::Result<TcpListener> {
    each_addr("bind", addr, |a| listen(a, opts))
}

fn listen(addr: SocketAddr, opts: &ListenOptions) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if opts.reuseport {
        sock.set_reuse_port(true)?;
    }
    if opts.nodelay {
        sock.set_tcp_nodelay(true)?;
    }
    sock.bind(&addr.into())
        .map_err(|e| context(e, "bind", addr))?;
    sock.listen(opts.backlog_arg())
        .map_err(|e| context(e, "listen on", addr))?;
    Ok(TcpListener {
        acceptor: Acceptor::new(SharedFd::new(OwnedFd::from(sock))),
    })
}

fn local_addr(fd: &SharedFd) -> io::Result<SocketAddr> {
    SockRef::from(fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
}

/// The socket's descriptor, borrowed: `socket2::SockRef::from(&socket)` sets any option
/// (keepalive, buffer sizes, linger) without `unsafe`.
impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.acceptor.fd.as_fd()
    }
}

/// Takes ownership of a listening TCP socket's descriptor, switched to blocking mode (see
/// [`TcpListener::from_std`]).
impl FromRawFd for TcpListener {
    unsafe fn from_raw_fd(fd: RawFd) -> TcpListener {
        TcpListener {
            // SAFETY: the caller owns `fd`, an open socket, and gives it up (the trait's
            // contract).
            acceptor: Acceptor::new(SharedFd::new(unsafe { super::adopt(fd) })),
        }
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.acceptor.fd.raw()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.acceptor.fd.raw())
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

/// A TCP connection.
///
/// Methods take `&self`, so one task can read while another writes. Dropping the stream
/// closes its descriptor once no operation uses it any more.
pub struct TcpStream {
    stream: Stream,
}

impl TcpStream {
    pub(crate) fn from_fd(fd: OwnedFd) -> TcpStream {
        TcpStream {
            stream: Stream::new(fd, Sender::tcp()),
        }
    }

    /// Adopts a connected stream made with the standard library (switched to blocking mode:
    /// the ring, not `O_NONBLOCK`, makes its operations asynchronous). A plain socket call:
    /// works outside a loop.
    pub fn from_std(s: std::net::TcpStream) -> io::Result<TcpStream> {
        s.set_nonblocking(false)?;
        Ok(TcpStream::from_fd(OwnedFd::from(s)))
    }

    /// Connects to `addr`, trying each resolved address in turn.
    ///
    /// # Errors
    ///
    /// The last address's error (`ConnectionRefused`, `TimedOut`, ...), naming it.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last = None;
        for a in resolve("connect", addr)? {
            let sock = Socket::new(Domain::for_address(a), Type::STREAM, Some(Protocol::TCP))?;
            match connect_one(sock, a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| nothing_resolved("connect")))
    }

    /// Connects `socket`, configured beforehand, to `addr`: options that must be set before
    /// the handshake (buffer sizes, which size the window; `TCP_NODELAY`; a source address
    /// with `bind`; `SO_MARK`, ...) through [`socket2`]. It is switched to blocking mode, as
    /// [`from_std`](Self::from_std) does.
    ///
    /// ```
    /// use ringloop::net::{TcpListener, TcpStream};
    /// use socket2::{Domain, Protocol, Socket, Type};
    ///
    /// ringloop::EventLoop::new()?.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0")?;
    ///     let addr = listener.local_addr()?;
    ///     let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    ///     sock.set_recv_buffer_size(64 * 1024)?;
    ///     sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())?;
    ///     let client = TcpStream::connect_with(sock, addr).await?;
    ///     let (server, peer) = listener.accept().await?;
    ///     assert_eq!(peer, client.local_addr()?);
    ///     # drop(server);
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The connect error (`ConnectionRefused`, `TimedOut`, ...), naming `addr`.
    pub async fn connect_with(socket: Socket, addr: SocketAddr) -> io::Result<TcpStream> {
        socket.set_nonblocking(false)?;
        connect_one(socket, addr).await
    }

    /// Hands the connection back to the standard library (for a blocking thread, or another
    /// runtime), in blocking mode, with the bytes the loop had already received for it that
    /// no call here returned: they come before anything read from the returned stream.
    ///
    /// Every write queued with [`write_queued`](Self::write_queued) is sent first (so this
    /// waits while a peer that does not read holds them up: put it under a timeout where
    /// that matters), the stream's receive is ended, and the descriptor is returned once no
    /// operation of the loop's uses it. There is no `IntoRawFd`: while a receive is armed in
    /// the kernel, the descriptor cannot be handed over at once without losing what it
    /// receives meanwhile.
    ///
    /// # Errors
    ///
    /// A queued write's failure, or a receive's (the peer reset the connection, say); or,
    /// after a second, an operation of a dropped future still in the kernel. The socket is
    /// closed then, with any bytes received before the error: the connection is broken.
    pub async fn into_std(self) -> io::Result<(std::net::TcpStream, Vec<u8>)> {
        let (fd, received) = self.stream.into_fd().await?;
        Ok((std::net::TcpStream::from(fd), received))
    }

    stream_methods!();

    /// Queues all of `buf[..len]` to be written after every write queued before it, and
    /// resolves as soon as the loop holds `buf`, without waiting for the kernel to send it:
    /// the loop sends it, then drops it. One task wake-up per request fewer than
    /// [`write_all`](Self::write_all) in a request/response server, which is what it is for.
    ///
    /// It waits only while the stream has 256 KiB or 64 writes queued and unsent (the peer is
    /// not reading). A queued [`RecvBuf`](crate::RecvBuf) keeps its pool buffer until sent, so one peer that
    /// stops reading can hold up to 64 of them; where that matters more than a wake-up per
    /// request, [`write_all`](Self::write_all) holds one (the echo demo uses it for that).
    /// Dropping the stream does not discard queued writes: the loop still sends them, then
    /// closes the socket. Closing the loop cancels those not yet sent.
    ///
    /// A write queued with nothing in flight is tried at once, while the loop submits it
    /// (Linux 6.1+): the `io_uring_enter` that sends a reply also sleeps until the next
    /// request, rather than waking once more for the reply's completion. For that the loop
    /// adds the socket, on its first such write, to an epoll instance it polls, which wakes
    /// it if a try found the socket's buffer full once there is room again (an entry in the
    /// kernel, gone with the socket).
    ///
    /// # Errors
    ///
    /// A queued write's failure (the peer reset the connection, say) is reported by the next
    /// call on this stream's write side — `write_queued`, [`flush`](Self::flush),
    /// `write`, `write_all` or `shutdown` — and by every call after: the writes queued behind
    /// the failed one are dropped unsent, so the byte stream is broken from there. Awaited
    /// writes and `shutdown` go after the queued writes, so they never overtake them.
    ///
    /// # Example
    ///
    /// An echo connection: each received buffer goes straight back, and the task is woken
    /// only when the next request arrives.
    ///
    /// ```
    /// use ringloop::net::{TcpListener, TcpStream};
    /// use ringloop::{spawn, EventLoop};
    ///
    /// EventLoop::new()?.block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:0")?;
    ///     let addr = listener.local_addr()?;
    ///     spawn(async move {
    ///         let (conn, _) = listener.accept().await?;
    ///         loop {
    ///             let buf = conn.recv().await?;
    ///             if buf.is_empty() {
    ///                 return conn.flush().await; // end of stream: let the replies go out
    ///             }
    ///             conn.write_queued(buf).await?;
    ///         }
    ///     });
    ///     let client = TcpStream::connect(addr).await?;
    ///     client.write_queued(&b"ping"[..]).await?;
    ///     let reply = client.recv().await?;
    ///     assert_eq!(&reply[..], b"ping");
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_queued<B: IoBuf + Send>(
        &self,
        buf: B,
    ) -> impl Future<Output = io::Result<()>> + '_ {
        self.stream.write_queued(buf)
    }

    /// Sets `TCP_NODELAY` (disables Nagle's algorithm).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        SockRef::from(&self.stream.fd).set_tcp_nodelay(on)
    }

    /// Whether `TCP_NODELAY` is set: by [`set_nodelay`](TcpStream::set_nodelay), or copied
    /// from its listener (see [`TcpListener::set_nodelay`]).
    pub fn nodelay(&self) -> io::Result<bool> {
        SockRef::from(&self.stream.fd).tcp_nodelay()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        SockRef::from(&self.stream.fd)
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        local_addr(&self.stream.fd)
    }
}

async fn connect_one(sock: Socket, addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::from_fd(OwnedFd::from(sock));
    Op::new(Connect {
        fd: stream.stream.fd.clone(),
        addr: Box::new(SockAddr::from(addr)),
    })
    .await
    .result
    .map_err(|e| context(e, "connect to", addr))?;
    Ok(stream)
}

impl TcpStream {
    /// The stream inside, for the byte-stream traits (`compat`).
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn inner(&self) -> &Stream {
        &self.stream
    }
}

/// The socket's descriptor, borrowed: `socket2::SockRef::from(&socket)` sets any option
/// (keepalive, buffer sizes, linger) without `unsafe`.
impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.fd.as_fd()
    }
}

/// Takes ownership of a connected TCP socket's descriptor, switched to blocking mode (see
/// [`TcpStream::from_std`]).
impl FromRawFd for TcpStream {
    unsafe fn from_raw_fd(fd: RawFd) -> TcpStream {
        // SAFETY: the caller owns `fd`, an open socket, and gives it up (the trait's contract).
        TcpStream::from_fd(unsafe { super::adopt(fd) })
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.fd.raw()
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.stream.fd.raw())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}
