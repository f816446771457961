//! `UnixListener` and `UnixStream`: the TCP twins on Unix-domain stream sockets.

use std::fmt;
use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use super::acceptor::Acceptor;
use super::ops::Connect;
use super::stream::{stream_methods, Stream};
use super::write_queue::Sender;
use super::ListenOptions;
use crate::buf::IoBuf;
use crate::driver::Op;
use crate::fd::SharedFd;

fn path_error(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Runs `f` on a std view of `fd`, which is only borrowed.
fn with_std<T>(fd: RawFd, f: impl FnOnce(&std::os::unix::net::UnixStream) -> T) -> T {
    // SAFETY: `fd` is an open Unix socket owned by the caller for the whole call; ManuallyDrop
    // keeps the view from closing it.
    let view = ManuallyDrop::new(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) });
    f(&view)
}

pub(super) fn bind_with(path: &Path, opts: &ListenOptions) -> io::Result<UnixListener> {
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let addr = SockAddr::unix(path).map_err(|e| path_error(e, "bind", path))?;
    sock.bind(&addr).map_err(|e| path_error(e, "bind", path))?;
    sock.listen(opts.backlog_arg())
        .map_err(|e| path_error(e, "listen on", path))?;
    Ok(UnixListener {
        acceptor: Acceptor::new(SharedFd::new(OwnedFd::from(sock))),
    })
}

/// A Unix-domain socket accepting connections.
pub struct UnixListener {
    acceptor: Acceptor,
}

impl UnixListener {
    /// Binds to the path `path` (which must not exist) and listens. A plain socket call.
    /// [`ListenOptions`] sets the backlog.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        bind_with(path.as_ref(), &ListenOptions::new())
    }

    /// Adopts a listener made with the standard library (switched to blocking mode).
    pub fn from_std(l: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        l.set_nonblocking(false)?;
        Ok(UnixListener {
            acceptor: Acceptor::new(SharedFd::new(OwnedFd::from(l))),
        })
    }

    /// Hands the listener back to the standard library (blocking mode), with the
    /// connections the loop had already accepted that no `accept` returned; as
    /// [`TcpListener::into_std`](super::TcpListener::into_std).
    ///
    /// # Errors
    ///
    /// As [`TcpListener::into_std`](super::TcpListener::into_std).
    pub async fn into_std(
        self,
    ) -> io::Result<(
        std::os::unix::net::UnixListener,
        Vec<std::os::unix::net::UnixStream>,
    )> {
        let (fd, accepted) = self.acceptor.into_fd().await?;
        Ok((
            std::os::unix::net::UnixListener::from(fd),
            accepted
                .into_iter()
                .map(std::os::unix::net::UnixStream::from)
                .collect(),
        ))
    }

    /// Waits for a connection. Cancel-safe, with the same back-off on `EMFILE` as
    /// [`TcpListener::accept`](super::TcpListener::accept).
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        loop {
            // The address comes from the stream, in the form std's `SocketAddr` takes, so the
            // acceptor is not asked for one.
            let a = self.acceptor.accept(false).await?;
            let stream = UnixStream::from_fd(a.fd);
            match stream.peer_addr() {
                Ok(addr) => return Ok((stream, addr)),
                // A peer already gone has no address: skip its connection, as TCP's accept does.
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The address this listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.acceptor.fd.raw(), |s| s.local_addr())
    }
}

/// The socket's descriptor, borrowed: `socket2::SockRef::from(&socket)` sets any option
/// (keepalive, buffer sizes, linger) without `unsafe`.
impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.acceptor.fd.as_fd()
    }
}

/// Takes ownership of a listening Unix socket's descriptor, switched to blocking mode (see
/// [`UnixListener::from_std`]).
impl FromRawFd for UnixListener {
    unsafe fn from_raw_fd(fd: RawFd) -> UnixListener {
        UnixListener {
            // SAFETY: the caller owns `fd`, an open socket, and gives it up (the trait's
            // contract).
            acceptor: Acceptor::new(SharedFd::new(unsafe { super::adopt(fd) })),
        }
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.acceptor.fd.raw()
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("fd", &self.acceptor.fd.raw())
            .finish()
    }
}

/// A Unix-domain stream connection.
pub struct UnixStream {
    stream: Stream,
}

impl UnixStream {
    fn from_fd(fd: OwnedFd) -> UnixStream {
        UnixStream {
            stream: Stream::new(fd, Sender::default()),
        }
    }
}

impl UnixStream {
    /// Adopts a connected stream made with the standard library (switched to blocking mode).
    /// A plain socket call: works outside a loop.
    pub fn from_std(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        s.set_nonblocking(false)?;
        Ok(UnixStream::from_fd(OwnedFd::from(s)))
    }

    /// A connected pair of Unix stream sockets (`socketpair(2)`), as with
    /// `std::os::unix::net::UnixStream::pair`. A plain socket call: works outside a loop.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None)?;
        Ok((
            UnixStream::from_fd(OwnedFd::from(a)),
            UnixStream::from_fd(OwnedFd::from(b)),
        ))
    }

    /// Hands the connection back to the standard library, in blocking mode, with the bytes
    /// the loop had already received for it that no call here returned; as
    /// [`TcpStream::into_std`](super::TcpStream::into_std), which says what is done first
    /// and why there is no `IntoRawFd`.
    ///
    /// # Errors
    ///
    /// As [`TcpStream::into_std`](super::TcpStream::into_std).
    pub async fn into_std(self) -> io::Result<(std::os::unix::net::UnixStream, Vec<u8>)> {
        let (fd, received) = self.stream.into_fd().await?;
        Ok((std::os::unix::net::UnixStream::from(fd), received))
    }

    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let addr = SockAddr::unix(path).map_err(|e| path_error(e, "connect to", path))?;
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        let stream = UnixStream::from_fd(OwnedFd::from(sock));
        Op::new(Connect {
            fd: stream.stream.fd.clone(),
            addr: Box::new(addr),
        })
        .await
        .result
        .map_err(|e| path_error(e, "connect to", path))?;
        Ok(stream)
    }

    stream_methods!();

    /// Queues all of `buf[..len]` to be written after every write queued before it, and
    /// resolves as soon as the loop holds `buf`; as [`TcpStream::write_queued`], which says
    /// when it waits and how errors are reported.
    ///
    /// [`TcpStream::write_queued`]: crate::net::TcpStream::write_queued
    ///
    /// # Errors
    ///
    /// A queued write's failure, reported by the next call on the write side and every one
    /// after.
    pub fn write_queued<B: IoBuf + Send>(
        &self,
        buf: B,
    ) -> impl Future<Output = io::Result<()>> + '_ {
        self.stream.write_queued(buf)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.stream.fd.raw(), |s| s.peer_addr())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.stream.fd.raw(), |s| s.local_addr())
    }
}

impl UnixStream {
    /// The stream inside, for the byte-stream traits (`compat`).
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn inner(&self) -> &Stream {
        &self.stream
    }
}

/// The socket's descriptor, borrowed: `socket2::SockRef::from(&socket)` sets any option
/// (keepalive, buffer sizes, linger) without `unsafe`.
impl AsFd for UnixStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.fd.as_fd()
    }
}

/// Takes ownership of a connected Unix stream socket's descriptor, switched to blocking mode
/// (see [`UnixStream::from_std`]).
impl FromRawFd for UnixStream {
    unsafe fn from_raw_fd(fd: RawFd) -> UnixStream {
        // SAFETY: the caller owns `fd`, an open socket, and gives it up (the trait's contract).
        UnixStream::from_fd(unsafe { super::adopt(fd) })
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.fd.raw()
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.stream.fd.raw())
            .finish()
    }
}
