//! A stream as a plain byte stream, polled by hand: what the ecosystem's I/O traits (tokio's,
//! futures', hyper's; see `compat`) are built on. No `unsafe` and no promise is asked of the
//! caller, because no caller's memory is ever handed to the kernel:
//! - a read copies out of the loop-owned buffer the stream's `recv()` fills, and keeps what
//!   did not fit for the next read (or `recv()`), so a read dropped between polls loses
//!   nothing;
//! - a write copies into a buffer handed to the stream's write queue, which sends it in order
//!   after every write queued before; once the queue holds its bound the write waits for room.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::task::{ready, Context, Poll};

use socket2::SockRef;

use super::recv;
use super::stream::Stream;

impl Stream {
    /// Reads into a caller's buffer with `room` bytes free: `put` is handed the bytes read
    /// (at most `room`, at least one unless at end of stream), and the count is returned.
    /// `Ok(0)` with `room > 0` is end of stream.
    pub(crate) fn poll_read_bytes(
        &self,
        cx: &mut Context<'_>,
        room: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        if room == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut reads = self.rx.byte_reads();
        let (buf, pos) = match reads.rest.take() {
            Some(rest) => rest,
            None => match recv::poll_recv(&self.fd, &self.rx, &mut reads.poll, cx) {
                Poll::Ready(Ok(buf)) => (buf, 0),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            },
        };
        let unread = &buf[pos..];
        let n = unread.len().min(room);
        put(&unread[..n]);
        if n < unread.len() {
            reads.rest = Some((buf, pos + n));
            return Poll::Ready(Ok(n));
        }
        // A buffer back to the pool may wake a task waiting for one: not under the lock.
        drop(reads);
        drop(buf);
        Poll::Ready(Ok(n))
    }

    /// Copies what of `bufs` the write queue has room for into it; how many bytes it took.
    /// `Pending` while the queue is full (the peer is not reading), woken when there is room.
    /// An earlier queued write's failure is returned instead, by this and every later call.
    pub(crate) fn poll_write_bytes(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.tx.poll_copy(&self.fd, bufs, cx)
    }

    /// Ready once every byte accepted so far is handed to the kernel: in the stream's one
    /// send in flight, which the loop submits before it next waits, if not sent already.
    /// Nothing waits in the queue behind it, so no further call is needed for the bytes to
    /// go.
    pub(crate) fn poll_flush_bytes(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.poll_handed_over(cx)
    }

    /// Waits until every byte accepted was sent (the kernel took it), then shuts down the
    /// write side: the peer reads end of stream after the last byte written.
    pub(crate) fn poll_shutdown_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.tx.poll_flush(cx))?;
        // shutdown(2) does not block: it queues the FIN behind the bytes the kernel holds,
        // which after the flush are all of them. One plain call rather than an op.
        match SockRef::from(&self.fd).shutdown(Shutdown::Write) {
            // The peer already went: nothing is left to shut.
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }
}
