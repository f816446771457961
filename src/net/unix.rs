//! `UnixListener` and `UnixStream`: the TCP twins on Unix-domain stream sockets.

use std::fmt;
use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

use super::acceptor::Acceptor;
use super::ops::Connect;
use super::queued::{self, Sender};
use super::{stream, ListenOptions};
use crate::buf::{BufResult, IoBuf, IoBufMut, RecvBuf};
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
    fd: SharedFd,
    /// The receive side: an armed multishot receive, or results kept for dropped futures.
    receiver: stream::Receiver,
    sender: Sender,
}

impl UnixStream {
    fn from_fd(fd: OwnedFd) -> UnixStream {
        UnixStream {
            fd: SharedFd::stream(fd),
            receiver: stream::Receiver::default(),
            sender: Sender::default(),
        }
    }
}

impl UnixStream {
    /// Connects to the socket at `path`.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let addr = SockAddr::unix(path).map_err(|e| path_error(e, "connect to", path))?;
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        let stream = UnixStream::from_fd(OwnedFd::from(sock));
        Op::new(Connect {
            fd: stream.fd.clone(),
            addr: Box::new(addr),
        })
        .await
        .result
        .map_err(|e| path_error(e, "connect to", path))?;
        Ok(stream)
    }

    /// Reads into `buf` from its start, up to its capacity; sets its length to the bytes
    /// read. `Ok(0)` is end of stream.
    ///
    /// Not cancel-safe: a future dropped while its read is in the kernel takes its buffer
    /// with it, and with that any bytes the kernel still reads into it. Use
    /// [`recv`](Self::recv) where a read may be abandoned (in a timeout, say).
    pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        stream::read(&self.fd, buf).await
    }

    /// Receives the next chunk into a loop-owned buffer from the loop's pool
    /// ([`Builder::recv_buffers`](crate::Builder::recv_buffers)); an empty [`RecvBuf`] means
    /// end of stream. No buffer is held while waiting, so idle connections cost none.
    ///
    /// Cancel-safe: if the future is dropped (say, in a timeout), no byte is lost; the next
    /// call returns it. When the pool runs dry the call waits for buffers to come back; the
    /// data stays in the socket meanwhile.
    ///
    /// (An `async fn` in effect; written out so the hot path has no extra state machine.)
    pub fn recv(&self) -> impl Future<Output = io::Result<RecvBuf>> + '_ {
        stream::recv(&self.fd, &self.receiver)
    }

    /// Writes `buf[..len]` once; returns how many bytes the kernel took.
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        stream::send(&self.fd, &self.sender, buf, false)
    }

    /// Writes all of `buf[..len]`, handling short writes.
    pub fn write_all<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<(), B>> + '_ {
        stream::write_all(&self.fd, &self.sender, buf)
    }

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
        queued::write_queued(&self.fd, &self.sender, buf)
    }

    /// Waits until every queued write has been sent.
    ///
    /// # Errors
    ///
    /// The first error a queued write met.
    pub async fn flush(&self) -> io::Result<()> {
        stream::flush(&self.sender).await
    }

    /// Shuts down the read, write or both halves.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        stream::shutdown(&self.fd, &self.sender, how).await
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.fd.raw(), |s| s.peer_addr())
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std(self.fd.raw(), |s| s.local_addr())
    }
}

impl AsRawFd for UnixStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream")
            .field("fd", &self.fd.raw())
            .finish()
    }
}
