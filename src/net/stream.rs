//! What TCP and Unix streams share: a connected socket with its receive side and its write
//! side, and the public methods over them, written once for both types (`stream_methods!`).

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;

use super::recv::{self, Receiver};
use super::release;
use super::send;
use super::write_queue::{self, Sender};
use crate::buf::{BufResult, IoBuf, IoBufMut, RecvBuf};
use crate::fd::SharedFd;

/// A connected stream socket: the inside of [`TcpStream`](super::TcpStream) and
/// [`UnixStream`](super::UnixStream).
pub(crate) struct Stream {
    pub(crate) fd: SharedFd,
    /// The receive side: an armed multishot receive, or the one single-shot receive in flight.
    pub(super) rx: Receiver,
    /// The write side: the queue of `write_queued` writes, made on the first one.
    pub(super) tx: Sender,
}

impl Stream {
    /// A stream over the connected socket `fd`, whose writes go through `tx`.
    #[inline]
    pub(crate) fn new(fd: OwnedFd, tx: Sender) -> Stream {
        Stream {
            fd: SharedFd::stream(fd),
            rx: Receiver::default(),
            tx,
        }
    }

    #[inline]
    pub(crate) async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        recv::read(&self.fd, buf).await
    }

    #[inline]
    pub(crate) fn recv(&self) -> impl Future<Output = io::Result<RecvBuf>> + '_ {
        recv::recv(&self.fd, &self.rx)
    }

    #[inline]
    pub(crate) fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        send::send(&self.fd, &self.tx, buf, false)
    }

    #[inline]
    pub(crate) fn write_all<B: IoBuf>(
        &self,
        buf: B,
    ) -> impl Future<Output = BufResult<(), B>> + '_ {
        send::write_all(&self.fd, &self.tx, buf)
    }

    #[inline]
    pub(crate) fn write_queued<B: IoBuf + std::marker::Send>(
        &self,
        buf: B,
    ) -> impl Future<Output = io::Result<()>> + '_ {
        write_queue::write_queued(&self.fd, &self.tx, buf)
    }

    pub(crate) async fn flush(&self) -> io::Result<()> {
        send::flush(&self.tx).await
    }

    pub(crate) async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        send::shutdown(&self.fd, &self.tx, how).await
    }

    /// Hands the socket back: every queued write sent, the receives ended, and the
    /// descriptor once no operation holds it; with the bytes the loop received that no call
    /// has returned yet, which come before anything read from the descriptor (see
    /// [`Receiver::take_received`]).
    pub(crate) async fn into_fd(self) -> io::Result<(OwnedFd, Vec<u8>)> {
        self.flush().await?;
        let received = self.rx.take_received().await?;
        let Stream { fd, rx, tx } = self;
        drop(rx);
        drop(tx);
        Ok((release::release(fd).await?, received))
    }
}

/// The public methods that [`TcpStream`](super::TcpStream) and
/// [`UnixStream`](super::UnixStream) share, with their docs, expanded inside each type's
/// `impl` block over its `stream` field.
macro_rules! stream_methods {
    () => {
        /// Reads into `buf` from its start, up to its capacity; sets its length to the bytes
        /// read. `Ok(0)` is end of stream.
        ///
        /// Not cancel-safe: a future dropped while its read is in the kernel takes its buffer
        /// with it, and with that any bytes the kernel still reads into it. Use
        /// [`recv`](Self::recv) where a read may be abandoned (in a timeout, say).
        pub async fn read<B: $crate::buf::IoBufMut>(
            &self,
            buf: B,
        ) -> $crate::buf::BufResult<usize, B> {
            self.stream.read(buf).await
        }

        /// Receives the next chunk into a loop-owned buffer from the loop's pool
        /// ([`Builder::recv_buffers`](crate::Builder::recv_buffers)); an empty
        /// [`RecvBuf`](crate::RecvBuf) means end of stream. No buffer is held while waiting,
        /// so idle connections cost none.
        ///
        /// Cancel-safe: if the future is dropped (say, in a timeout), no byte is lost; the
        /// next call returns it. When the pool runs dry the call waits for buffers to come
        /// back; the data stays in the socket meanwhile.
        ///
        /// (An `async fn` in effect; written out so the hot path has no extra state machine.)
        #[inline]
        pub fn recv(
            &self,
        ) -> impl ::std::future::Future<Output = ::std::io::Result<$crate::buf::RecvBuf>> + '_ {
            self.stream.recv()
        }

        /// Writes `buf[..len]` once; returns how many bytes the kernel took.
        #[inline]
        pub fn write<B: $crate::buf::IoBuf>(
            &self,
            buf: B,
        ) -> impl ::std::future::Future<Output = $crate::buf::BufResult<usize, B>> + '_ {
            self.stream.write(buf)
        }

        /// Writes all of `buf[..len]`, handling short writes: where the socket's buffer takes
        /// only part of it at a time (a slow reader), the kernel sends the rest as room frees
        /// up (`MSG_WAITALL`, Linux 5.19+), so the whole write costs one completion and one
        /// wake-up of the task, however slowly the peer reads. On older kernels each part
        /// comes back and the rest is sent again from where it stopped.
        #[inline]
        pub fn write_all<B: $crate::buf::IoBuf>(
            &self,
            buf: B,
        ) -> impl ::std::future::Future<Output = $crate::buf::BufResult<(), B>> + '_ {
            self.stream.write_all(buf)
        }

        /// Waits until every write queued with [`write_queued`](Self::write_queued) has been
        /// sent (the kernel took all of its bytes).
        ///
        /// # Errors
        ///
        /// The first error a queued write met, as for `write_queued`.
        pub async fn flush(&self) -> ::std::io::Result<()> {
            self.stream.flush().await
        }

        /// Shuts down the read, write or both halves; the peer sees end of stream after a
        /// write shutdown, which goes after every queued write.
        pub async fn shutdown(&self, how: ::std::net::Shutdown) -> ::std::io::Result<()> {
            self.stream.shutdown(how).await
        }
    };
}

pub(super) use stream_methods;
