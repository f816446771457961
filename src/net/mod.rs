//! Networking on the ring: TCP, UDP and Unix stream sockets.
//!
//! Sockets are made with plain socket calls (they work outside a loop); every operation on
//! them is an io_uring SQE. An I/O object is served by the loop where it is first used; using
//! it from another loop's thread panics saying so.
//!
//! Operations take owned buffers and give them back ([`BufResult`](crate::BufResult)).
//! Dropping any I/O future cancels its operation without letting the kernel touch freed
//! memory. `accept` and `recv` are cancel-safe: a connection or bytes that arrived for a future
//! that was dropped (say, in a timeout) are kept for the next call.
//!
//! On Linux 5.19+ a listener keeps one multishot accept armed from its first `accept()` on:
//! the kernel takes connections as they arrive, up to 128 ahead of the caller, then pauses
//! until they are taken (the rest wait in the backlog, sized by [`ListenOptions`]). On 6.0+
//! a stream keeps one multishot receive armed, drawing from the loop's buffer pool, so an
//! idle connection holds no buffer. [`Features`](crate::Features) reports which paths are in
//! use; older kernels get one operation per call, with the same API and guarantees.
//!
//! # Writing
//!
//! - **`write_queued`** for replies, the recommended path: it resolves once the loop holds the
//!   buffer; the loop sends queued writes in order (several in one SENDMSG when they pile up),
//!   resumes short sends and drops each buffer when sent, without waking the task. A task
//!   serving requests is woken once per request. Its errors come back from the next call;
//!   [`flush`](TcpStream::flush) waits until everything queued was sent.
//! - **`write_all`** when the buffer must come back, or the caller must know the kernel took
//!   the bytes before it goes on: one task wake-up more per write.
//! - **`write`** for one send and its count.
//! - The byte-stream traits (cargo features, see `compat`) for code written on tokio's,
//!   futures' or hyper's I/O traits: they copy into the write queue.
//!
//! Address resolution (`impl ToSocketAddrs`) uses the standard library's resolver, which
//! blocks for host names; pass `SocketAddr`s on a hot path.
//!
//! ```
//! use ringloop::net::{TcpListener, TcpStream};
//!
//! let mut lp = ringloop::EventLoop::new()?;
//! lp.block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let client = ringloop::spawn(async move {
//!         let s = TcpStream::connect(addr).await?;
//!         let (r, _) = s.write_all(b"ping").await;
//!         r?;
//!         let (r, buf) = s.read(Vec::with_capacity(16)).await;
//!         r?;
//!         Ok::<_, std::io::Error>(buf)
//!     });
//!     let (conn, _peer) = listener.accept().await?;
//!     let (r, buf) = conn.read(Vec::with_capacity(16)).await;
//!     r?;
//!     let (r, _) = conn.write_all(buf).await;
//!     r?;
//!     assert_eq!(client.await.unwrap()?, b"ping");
//!     Ok::<(), std::io::Error>(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod acceptor;
mod armed;
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
mod byte_stream;
mod listen;
mod ops;
mod recv;
mod release;
mod send;
mod stream;
mod tcp;
mod udp;
mod unix;
mod write_queue;

pub use listen::ListenOptions;
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// Resolves `addr`; the error says what was being done.
fn resolve(what: &str, addr: impl ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    addr.to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: cannot resolve address: {e}")))
}

fn nothing_resolved(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}: the address resolved to nothing"),
    )
}

/// Runs `f` on each resolved address until one succeeds; else the last error.
fn each_addr<T>(
    what: &str,
    addr: impl ToSocketAddrs,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in resolve(what, addr)? {
        match f(a) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| nothing_resolved(what)))
}

/// Takes ownership of `fd` for a socket object (`FromRawFd`), switched to blocking mode as
/// `from_std` does: with `O_NONBLOCK` set, io_uring reports `EAGAIN` instead of waiting.
///
/// # Safety
///
/// `fd` is an open socket descriptor that the caller owns and gives up.
unsafe fn adopt(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    // SAFETY: the caller's contract.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Cannot fail on an open descriptor; on a bad one the first operation reports it.
    let _ = socket2::SockRef::from(&fd).set_nonblocking(false);
    fd
}

/// Wraps `e` with what was attempted on which address, keeping its kind.
fn context(e: io::Error, what: &str, addr: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
}
