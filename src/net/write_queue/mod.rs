//! Queued writes: a stream's writes that resolve once the loop holds their buffer, not once
//! the kernel has sent it (`write_queued`), and the `flush` that waits for them.
//!
//! io_uring does not order two sends on one socket, so one op per stream is in the kernel at
//! a time, owned by the stream's [`WriteQueue`] (a detached op): a SEND of the oldest write,
//! or, when writes have piled up behind one in flight, a SENDMSG carrying the oldest and those
//! behind it (up to 64), so that a backlog drains in one op rather than one op per write. The
//! rest wait here in order. The op's CQE is handled by the loop itself
//! ([`Detached::complete`]), which drops what was sent, resumes a short send, then submits
//! what waits. No task is woken for it: a request/response server polls its task once per
//! request instead of twice (once for the request, once more for the reply's completion).
//!
//! Ownership: a queued buffer belongs to the queue from the moment `write_queued` resolves.
//! Those the op in flight carries are taken out only by `complete`, after its CQE; the slot's
//! reference to the queue keeps them (and the SENDMSG's header and vectors) alive meanwhile,
//! however the stream is dropped, and a loop that must abandon the op at close leaks that
//! reference (and so the buffers) rather than free it.
//!
//! The first failure is kept: the writes still waiting are dropped unsent (the byte stream
//! has a hole from there on), and every later write, queued or not, flush and shutdown of
//! the stream returns it.
//!
//! Tries (TCP, Linux 6.1+): a write submitted with nothing in flight goes as a SEND with
//! `MSG_DONTWAIT`, which the kernel ends while it submits it: sent, short, or `EAGAIN`,
//! never parked on the socket. The wait that submits it then asks for one completion more
//! (`Driver::submit_detached_tried`), so a server's reply and the sleep until the next
//! request are one `io_uring_enter`, not two (the second only to reap the reply's
//! completion). That completion is seen when the loop next wakes, which is harmless only
//! while nothing waits for it, so a try is not counted, or stops being counted, when:
//! - a task waits on the queue (`flush`, room, an awaited write, `shutdown`);
//! - a write is queued behind it (its submission waits for the try's completion);
//! - the buffer's drop could wake a task (`IoBuf::DROP_WAKES_NOTHING` is false), or tasks
//!   wait for a buffer of the receive pool, which a `RecvBuf`'s drop would hand on.
//!
//! A try that comes back short (the socket's buffer full) has its rest sent once the loop
//! sees its completion, and the loop may be asleep with nothing else to wake it: the
//! loop's room watcher (`driver::writable`) wakes it once the socket has room again. A socket
//! is added to it with the stream's first counted try, at its second write. The first write
//! is a *quiet* try instead (`driver::quiet`): its success posts no CQE and a short one posts
//! its CQE at once, so it needs no watcher, and a connection that writes once (a
//! short-lived client's) costs no `epoll_ctl`, no epoll entry and no enter for its reply. A
//! quiet try waited on (as above) has the enter that submits it not sleep. One the watcher
//! cannot take is sent plainly, as are Unix streams, whose sockets wake POLLOUT waiters on
//! every read of the peer. After a short try the next 16 fresh writes are sent plainly: where
//! the peer is slow to read, tries would mostly cost an op more.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::buf::IoBuf;
use crate::driver::loop_cell::LoopCell;
use crate::driver::Driver;
use crate::fd::SharedFd;
use crate::util::once_arc::{ArcRef, OnceArc};

/// A `write_queued` waits while this many bytes are queued and not yet sent...
mod queue;
mod state;

pub(crate) use queue::WriteQueue;
use state::State;

pub(crate) const BACKLOG_BYTES: usize = 256 * 1024;
/// ... or while this many writes wait behind the one in the kernel.
pub(crate) const BACKLOG_WRITES: usize = 64;

/// The write side of a stream socket: its queue, made on the first queued write.
#[derive(Default)]
pub(crate) struct Sender {
    queue: OnceArc<WriteQueue>,
    /// Queued writes may be tried at submit (TCP; see the module doc).
    tries: bool,
}

impl Sender {
    /// The write side of a TCP stream, whose queued writes may be tried at submit.
    pub(crate) fn tcp() -> Sender {
        Sender {
            queue: OnceArc::new(),
            tries: true,
        }
    }

    /// The queue, made for `driver`'s loop on the first queued write.
    #[inline]
    fn queue(&self, fd: &SharedFd, driver: &Driver) -> ArcRef<'_, WriteQueue> {
        match self.queue.get() {
            Some(q) => q,
            None => self.make_queue(fd, driver),
        }
    }

    #[cold]
    #[inline(never)]
    fn make_queue(&self, fd: &SharedFd, driver: &Driver) -> ArcRef<'_, WriteQueue> {
        self.queue.get_or_init(|| {
            Arc::new(WriteQueue {
                fd: fd.clone(),
                clear: AtomicBool::new(true),
                state: LoopCell::new(
                    driver,
                    State {
                        // A stream whose writes are never tried is known as such at once.
                        watched: (!self.tries).then_some(false),
                        // The first write is a quiet try (or goes plainly), so that a
                        // connection that writes once (a short-lived client's) never joins
                        // the room watcher: that is an `epoll_ctl` per connection, and an
                        // epoll entry to remove at its close. Counted tries, and the watcher,
                        // start with the second.
                        untried: 1,
                        fresh: true,
                        ..State::default()
                    },
                ),
            })
        })
    }

    /// Copies what of `bufs` fits into the queue (see [`WriteQueue::poll_copy`]), made for
    /// the running loop if this is the stream's first queued write.
    ///
    /// # Panics
    ///
    /// Outside a running loop, or on another loop than the one serving the stream.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn poll_copy(
        &self,
        fd: &SharedFd,
        bufs: &[io::IoSlice<'_>],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        crate::driver::with_current(|driver| {
            // Claimed first: the queue is made for the loop serving the socket, no other.
            fd.claim_on(driver.id());
            self.queue(fd, driver).poll_copy(driver, bufs, cx)
        })
        .unwrap_or_else(|| panic!("ringloop: a stream was written outside a running event loop"))
    }

    /// Ready once nothing accepted waits behind the send in flight (see
    /// [`WriteQueue::poll_handed_over`]), or with the first failure.
    ///
    /// # Panics
    ///
    /// Outside the loop serving the stream, once it has queued writes.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn poll_handed_over(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(q) = self.queue.get() else {
            return Poll::Ready(Ok(()));
        };
        crate::driver::with_current(|driver| q.poll_handed_over(driver, cx))
            .unwrap_or_else(|| panic!("ringloop: flush polled outside a running event loop"))
    }

    /// No queued write is waiting or in flight, and none failed: an awaited write or a
    /// shutdown may go at once. One atomic load.
    #[inline]
    pub(crate) fn clear(&self) -> bool {
        self.queue
            .get()
            .is_none_or(|q| q.clear.load(Ordering::Acquire))
    }

    /// Ready once every queued write has been sent (`Ok`), or one failed (its error).
    ///
    /// # Panics
    ///
    /// Outside the loop serving the stream, once it has queued writes.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.queue.get().is_none() {
            return Poll::Ready(Ok(()));
        }
        crate::driver::with_current(|driver| self.poll_flush_on(driver, cx))
            .unwrap_or_else(|| panic!("ringloop: flush polled outside a running event loop"))
    }

    /// [`poll_flush`](Sender::poll_flush) with the running loop's driver at hand.
    pub(crate) fn poll_flush_on(
        &self,
        driver: &Driver,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match self.queue.get() {
            None => Poll::Ready(Ok(())),
            Some(q) => q.poll_flush(driver, cx),
        }
    }
}

/// The future of `write_queued`.
pub(crate) struct QueuedWrite<'a, B> {
    tx: &'a Sender,
    fd: &'a SharedFd,
    buf: Option<B>,
}

// The buffer is only ever moved out, never pinned.
impl<B> Unpin for QueuedWrite<'_, B> {}

pub(crate) fn write_queued<'a, B: IoBuf + Send>(
    fd: &'a SharedFd,
    tx: &'a Sender,
    buf: B,
) -> QueuedWrite<'a, B> {
    QueuedWrite {
        tx,
        fd,
        buf: Some(buf),
    }
}

impl<B: IoBuf + Send> Future for QueuedWrite<'_, B> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        crate::driver::with_current(|driver| {
            // Claimed first: the queue is made for the loop serving the socket, no other.
            this.fd.claim_on(driver.id());
            this.tx
                .queue(this.fd, driver)
                .offer(driver, &mut this.buf, cx)
        })
        .unwrap_or_else(|| panic!("ringloop: write_queued() polled outside a running event loop"))
    }
}
