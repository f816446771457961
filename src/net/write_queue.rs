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
//! is added to it with the stream's first try, at its second write: the first goes
//! plainly, so that a connection that writes once (a short-lived client's) costs no
//! `epoll_ctl` and no epoll entry. One the watcher cannot take is sent plainly, as are
//! Unix streams, whose sockets wake POLLOUT waiters on every read of the peer. After a
//! short try the next 16 fresh writes are sent plainly: where the peer is slow to read,
//! tries would mostly cost an op more.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types};

use crate::buf::kept::KeptBuf;
use crate::buf::IoBuf;
use crate::driver::completion::{Completion, Detached};
use crate::driver::loop_cell::{LoopCell, LoopRef};
use crate::driver::Driver;
use crate::fd::SharedFd;
use crate::util::once_arc::{ArcRef, OnceArc};

/// A `write_queued` waits while this many bytes are queued and not yet sent...
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
                        // The first write goes plainly, so that a connection that writes
                        // once (a short-lived client's) never joins the room watcher: that
                        // is an `epoll_ctl` per connection, and an epoll entry to remove at
                        // its close. Tries, and the watcher, start with the second.
                        untried: 1,
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

pub(crate) struct WriteQueue {
    /// A clone: the descriptor stays open until the last queued write is done.
    fd: SharedFd,
    /// Mirrors "nothing waiting or in flight, no failure" for [`Sender::clear`].
    clear: AtomicBool,
    /// Touched only on the thread of the loop serving the stream: no lock on the path of
    /// every reply.
    state: LoopCell<State>,
}

#[derive(Default)]
struct State {
    /// The oldest write not wholly sent, and how many of its bytes were sent by earlier
    /// ops; the op in the kernel starts with it.
    inflight: Option<(KeptBuf, usize)>,
    /// Writes behind it, oldest first.
    waiting: VecDeque<KeptBuf>,
    /// How many of `waiting`'s first writes the op in the kernel carries too (a SENDMSG);
    /// 0 with a plain SEND.
    batched: usize,
    /// The SENDMSG's header and vectors, made the first time writes pile up behind one in
    /// flight. Boxed: the kernel is given its address.
    vectors: Option<Box<Vectors>>,
    /// Bytes of `inflight` and `waiting` not yet sent.
    backlog: usize,
    /// Whether the op in the kernel is a send tried at submit, and counted.
    trial: Trial,
    /// The loop's room watcher watches the socket (see `Driver::watch_writable`): asked on
    /// the first try, which does not go if it cannot; `Some(false)` from the start on a Unix
    /// stream.
    watched: Option<bool>,
    /// Fresh writes left to send plainly: the stream's first, and the next 16 after a try
    /// came back short (where the peer is slow to read, tries would mostly cost an op more).
    untried: u8,
    failed: Option<Failure>,
    /// Tasks waiting for room in the queue or for it to drain.
    wakers: Vec<Waker>,
}

/// The first failure of a queued write, kept so that every later call can report it.
struct Failure {
    kind: io::ErrorKind,
    errno: Option<i32>,
    text: String,
}

impl Failure {
    fn of(e: &io::Error) -> Failure {
        Failure {
            kind: e.kind(),
            errno: e.raw_os_error(),
            text: e.to_string(),
        }
    }

    fn error(&self) -> io::Error {
        match self.errno {
            Some(n) => io::Error::from_raw_os_error(n),
            None => io::Error::new(self.kind, self.text.clone()),
        }
    }
}

/// A SENDMSG's header and the vectors it points at: the writes of one batch.
struct Vectors {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
}

// SAFETY: the pointers are into the buffers of the same queue's state (and into `iov`), which
// only the loop serving the stream touches (a `LoopCell`); moving this to another thread
// moves no memory they point at.
unsafe impl Send for Vectors {}

/// Larger writes are never tried. A try saves one `io_uring_enter` per batch of replies,
/// which only small replies notice, while one that comes back short costs the loop a round
/// trip for the rest; a large write is the likelier to find the socket's buffer full, and
/// trying 16 KiB writes lowered `bench/`'s requests per second at 16 × 64 KiB.
const TRY_MAX: usize = 8 * 1024;

/// What the op in flight is, as to tries (see the module doc).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Trial {
    /// A plain send (or SENDMSG): `EAGAIN` is a failure.
    #[default]
    No,
    /// A send tried at submit (`MSG_DONTWAIT`), whose `EAGAIN` means the socket's buffer was
    /// full; counted among those the next wait lets settle unseen.
    Counted,
    /// A try no longer counted: something waits for its completion (see
    /// [`uncount`](State::uncount)).
    Uncounted,
}

/// Fresh writes sent plainly after a try came back short, before the next try.
const UNTRIED_AFTER_SHORT: u8 = 16;

/// At most this many writes go in one SENDMSG (far below the kernel's `UIO_MAXIOV`).
const MAX_BATCH: usize = BACKLOG_WRITES;

impl State {
    /// Something now waits for the op in flight to complete (a task, or a write queued
    /// behind it): if that op is a counted try, the next wait must end at its completion,
    /// not let it settle unseen (see `Driver::uncount_trial`).
    fn uncount(&mut self, driver: &Driver) {
        if self.trial == Trial::Counted {
            self.trial = Trial::Uncounted;
            driver.uncount_trial();
        }
    }

    /// Registers a task that waits for the op in flight to complete.
    fn register(&mut self, waker: &Waker, driver: &Driver) {
        self.uncount(driver);
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }

    /// Whether a new write must wait for room.
    fn full(&self) -> bool {
        self.inflight.is_some()
            && (self.backlog >= BACKLOG_BYTES || self.waiting.len() >= BACKLOG_WRITES)
    }

    /// Records `e` as the queue's failure; returns the writes that will never be sent (or
    /// not wholly), to be dropped once the borrow has ended. Call with no op in flight.
    fn fail(&mut self, e: &io::Error) -> (Option<(KeptBuf, usize)>, VecDeque<KeptBuf>) {
        if self.failed.is_none() {
            self.failed = Some(Failure::of(e));
        }
        self.backlog = 0;
        self.batched = 0;
        (self.inflight.take(), std::mem::take(&mut self.waiting))
    }

    /// Takes `n` bytes, which the op in the kernel reports sent, off the front of the queue.
    /// The writes wholly sent go to `done`, to be dropped once the borrow has ended.
    fn consume(&mut self, mut n: usize, done: &mut Done) {
        let mut carried = 1 + std::mem::take(&mut self.batched);
        while carried > 0 {
            let Some((buf, sent)) = self.inflight.as_mut() else {
                return;
            };
            let rest = buf.len() - *sent;
            if n < rest {
                *sent += n;
                self.backlog -= n;
                return;
            }
            n -= rest;
            self.backlog -= rest;
            let next = self.waiting.pop_front().map(|b| (b, 0));
            if let Some((buf, _)) = std::mem::replace(&mut self.inflight, next) {
                done.push(buf);
            }
            carried -= 1;
        }
    }
}

impl WriteQueue {
    /// The state, on `driver`'s loop (it panics on another). Released before a buffer is
    /// dropped or a waker woken; should other user code reached under it (an `IoBuf` or
    /// waker method) come back here, the second borrow panics rather than alias.
    #[inline]
    fn borrow(&self, driver: &Driver) -> LoopRef<'_, State> {
        self.state.borrow(driver)
    }

    /// Submits `buf[sent..]` as a SEND owned by this queue, tried at submit with `trial` (see
    /// `Driver::submit_detached_tried`). The caller stores `buf` as `inflight` right after,
    /// where it stays until the SEND's CQE.
    #[inline]
    fn submit(
        self: &Arc<Self>,
        driver: &Driver,
        buf: &KeptBuf,
        sent: usize,
        trial: bool,
    ) -> io::Result<()> {
        let sent = sent.min(buf.len());
        let len = u32::try_from(buf.len() - sent).unwrap_or(u32::MAX);
        // SAFETY: `sent <= len()`, so the pointer is inside (or one past) the buffer's bytes,
        // which stay put while `buf` lives (IoBuf). The queue keeps `buf` as `inflight` until
        // this op's CQE, and the slot keeps the queue alive until then.
        let ptr = unsafe { buf.ptr().add(sent) };
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, never a process-killing SIGPIPE.
        // MSG_DONTWAIT: a try, which the kernel ends at submit rather than park.
        let flags = if trial {
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT
        } else {
            libc::MSG_NOSIGNAL
        };
        let sqe = opcode::Send::new(types::Fd(self.fd.raw()), ptr, len)
            .flags(flags)
            .build();
        driver
            .submit_detached_tried(sqe, self.clone(), trial)
            .map(drop)
    }

    /// Submits the queue's front, with nothing in flight: a SEND of the oldest write's rest,
    /// or, with writes waiting behind it, one SENDMSG carrying them all (up to
    /// [`MAX_BATCH`]), so that a backlog drains in one op rather than one op per write.
    fn submit_next(self: &Arc<Self>, driver: &Driver, st: &mut State) -> io::Result<()> {
        let State {
            inflight,
            waiting,
            batched,
            vectors,
            trial,
            ..
        } = st;
        let Some((head, sent)) = inflight.as_ref() else {
            return Ok(());
        };
        let sent = (*sent).min(head.len());
        *trial = Trial::No;
        if waiting.is_empty() {
            *batched = 0;
            return self.submit(driver, head, sent, false);
        }
        let v = vectors.get_or_insert_with(|| {
            Box::new(Vectors {
                // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
                hdr: unsafe { std::mem::zeroed() },
                iov: Vec::new(),
            })
        });
        let more = waiting.len().min(MAX_BATCH - 1);
        v.iov.clear();
        // SAFETY: `sent <= len()`: inside (or one past) the buffer's bytes.
        let head_ptr = unsafe { head.ptr().add(sent) };
        v.iov.push(libc::iovec {
            iov_base: head_ptr as *mut libc::c_void,
            iov_len: head.len() - sent,
        });
        v.iov.extend(waiting.iter().take(more).map(|b| libc::iovec {
            iov_base: b.ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        v.hdr.msg_iov = v.iov.as_mut_ptr();
        v.hdr.msg_iovlen = v.iov.len() as _;
        // SAFETY of what the SQE points at: the header and the vectors are in `vectors`' box,
        // which is neither freed nor written until this op's CQE (only `submit_next`
        // writes it, and only with nothing in flight); the vectors point into the bytes of
        // `inflight` and the first `more` of `waiting`, which stay put while those buffers
        // live (IoBuf) and which the queue keeps until the CQE (they move only to `done` in
        // `consume`). The slot keeps the queue, and so all of it, alive until then.
        let sqe = opcode::SendMsg::new(types::Fd(self.fd.raw()), &v.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        driver.submit_detached(sqe, self.clone())?;
        *batched = more;
        Ok(())
    }

    /// Takes `buf` into the queue (submitting it if nothing is in flight), or waits for room.
    fn offer<B: IoBuf + Send>(
        self: &Arc<Self>,
        driver: &Driver,
        buf: &mut Option<B>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.borrow(driver);
        if let Some(f) = &st.failed {
            return Poll::Ready(Err(f.error()));
        }
        let Some(b) = buf.take() else {
            return Poll::Ready(Ok(())); // polled again after it resolved
        };
        if b.bytes_init() == 0 {
            return Poll::Ready(Ok(()));
        }
        if st.full() {
            *buf = Some(b);
            st.register(cx.waker(), driver);
            return Poll::Pending;
        }
        self.push(driver, st, KeptBuf::new(b), B::DROP_WAKES_NOTHING)
    }

    /// Copies the bytes of `bufs`, up to the queue's room, into a buffer the queue takes, as
    /// [`offer`](WriteQueue::offer) would; how many were taken. Waits for room while the
    /// queue is full, so a peer that does not read holds at most [`BACKLOG_BYTES`] (plus the
    /// one write in flight) of the stream's memory.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn poll_copy(
        self: &Arc<Self>,
        driver: &Driver,
        bufs: &[io::IoSlice<'_>],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let st = self.borrow(driver);
        if let Some(f) = &st.failed {
            return Poll::Ready(Err(f.error()));
        }
        let total = bufs
            .iter()
            .map(|b| b.len())
            .fold(0usize, usize::saturating_add);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut st = st;
        if st.full() {
            st.register(cx.waker(), driver);
            return Poll::Pending;
        }
        // Not full: with a write in flight the backlog is below the bound, and without one
        // it is empty, so there is room for at least one byte.
        let room = BACKLOG_BYTES.saturating_sub(st.backlog).max(1);
        let take = total.min(room);
        let mut copy = crate::buf::recycled::CopyBuf::with_capacity(take);
        for b in bufs {
            let want = take - copy.len();
            if want == 0 {
                break;
            }
            copy.extend_from_slice(&b[..b.len().min(want)]);
        }
        match self.push(driver, st, KeptBuf::new(copy), true) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(take)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Takes `kept` into the queue, with room for it: submits it if nothing is in flight
    /// (tried at submit if `tries_ok`, see the module doc), else queues it behind.
    #[inline]
    fn push(
        self: &Arc<Self>,
        driver: &Driver,
        mut st: LoopRef<'_, State>,
        kept: KeptBuf,
        tries_ok: bool,
    ) -> Poll<io::Result<()>> {
        let len = kept.len();
        if st.inflight.is_none() {
            let trial = if st.untried == 0 {
                tries_ok
                    && len <= TRY_MAX
                    && *st
                        .watched
                        .get_or_insert_with(|| driver.watch_writable(self.fd.raw()))
            } else {
                st.untried -= 1;
                false
            };
            if let Err(e) = self.submit(driver, &kept, 0, trial) {
                // Refused (the loop is closed, say): nothing of it was sent, the stream is
                // intact, and the buffer is dropped once the borrow has ended.
                drop(st);
                drop(kept);
                return Poll::Ready(Err(e));
            }
            set_inflight(&mut st, kept, 0);
            // A stale `Counted` (left by a try completed on the fast path below) is
            // overwritten here, and never read before: only an op in flight is asked.
            st.trial = if trial { Trial::Counted } else { Trial::No };
            self.clear.store(false, Ordering::Release);
        } else {
            // Its submission waits for the op in flight's completion.
            st.uncount(driver);
            st.waiting.push_back(kept);
        }
        st.backlog += len;
        Poll::Ready(Ok(()))
    }

    /// Ready once every accepted byte is carried by the one send in flight (or sent): the
    /// queue holds nothing the loop has yet to hand to the kernel. A send in flight is
    /// submitted, or sits in the submission queue that the loop submits before it next
    /// waits. The byte-stream traits' flush: a reply costs no task wake-up for its
    /// completion, as with tokio, where a write's bytes are in the kernel once accepted.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    fn poll_handed_over(&self, driver: &Driver, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.borrow(driver);
        if let Some(f) = &st.failed {
            return Poll::Ready(Err(f.error()));
        }
        if st.waiting.len() <= st.batched {
            return Poll::Ready(Ok(()));
        }
        st.register(cx.waker(), driver);
        Poll::Pending
    }

    fn poll_flush(&self, driver: &Driver, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // On another loop than the one sending the writes this would wait forever: `borrow`
        // panics there instead.
        let mut st = self.borrow(driver);
        if let Some(f) = &st.failed {
            return Poll::Ready(Err(f.error()));
        }
        if st.inflight.is_none() {
            return Poll::Ready(Ok(()));
        }
        st.register(cx.waker(), driver);
        Poll::Pending
    }
}

impl Detached for WriteQueue {
    fn complete(self: Arc<Self>, driver: &Driver, c: Completion) {
        if c.more() {
            // A plain SEND has one CQE; were the kernel to announce more, the buffer must
            // stay until the last.
            return;
        }
        let mut st = self.borrow(driver);
        // The common case first: the whole write went and nothing else waits or failed.
        // The buffer is dropped where it lies, once the borrow has ended.
        if let Some((buf, sent)) = &st.inflight {
            let rest = buf.len() - sent;
            if c.res > 0 && c.res as usize >= rest && st.waiting.is_empty() && st.wakers.is_empty()
            {
                st.backlog -= rest;
                // Dropped where it lies as the function returns, after the borrow: moving
                // it into `drop` would copy its nine words once more.
                let _done = st.inflight.take();
                self.clear.store(true, Ordering::Release);
                drop(st);
                return;
            }
        }
        if st.inflight.is_none() {
            return; // no write of ours is in flight: a stray CQE
        }
        // What is done with is dropped once the borrow has ended: a buffer's `Drop` is the
        // user's. The kernel has finished with every buffer the op carried: this was its
        // only CQE.
        let mut done = Done::default();
        let tried = std::mem::replace(&mut st.trial, Trial::No) != Trial::No;
        // Why the queue stops, if it does.
        let mut failure = match c.result() {
            // A try found the socket's buffer full: the rest goes plainly, parked on the
            // socket by the kernel until there is room.
            Err(e) if tried && e.raw_os_error() == Some(libc::EAGAIN) => {
                st.untried = UNTRIED_AFTER_SHORT;
                st.batched = 0;
                None
            }
            Ok(0) => Some(io::Error::new(
                io::ErrorKind::WriteZero,
                "a queued write could send no more bytes",
            )),
            Ok(n) => {
                let rest = st.inflight.as_ref().map_or(0, |(b, sent)| b.len() - sent);
                if tried && (n as usize) < rest {
                    st.untried = UNTRIED_AFTER_SHORT;
                }
                st.consume(n as usize, &mut done);
                None
            }
            // Nothing was sent: the same writes go again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                st.batched = 0;
                None
            }
            Err(e) => Some(e),
        };
        if failure.is_none() {
            // The rest of a short write, or the writes waiting: nothing is in flight now.
            if let Err(e) = self.submit_next(driver, &mut st) {
                // Never reached the kernel: dropped with the rest of the queue.
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            let unsent = st.fail(&e);
            let wakers = std::mem::take(&mut st.wakers);
            drop(st);
            drop(done);
            drop(unsent);
            wakers.into_iter().for_each(Waker::wake);
            return;
        }
        if st.inflight.is_none() {
            self.clear.store(true, Ordering::Release);
        }
        // Room, or a drained queue: every waiter re-checks (few, and on this loop).
        if st.wakers.is_empty() || st.full() {
            drop(st);
            drop(done);
            return;
        }
        let wakers = std::mem::take(&mut st.wakers);
        drop(st);
        drop(done);
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// The writes one completion finished with: the first inline, any more (a SENDMSG's) in a
/// vector allocated only then.
#[derive(Default)]
struct Done {
    first: Option<KeptBuf>,
    rest: Vec<KeptBuf>,
}

impl Done {
    fn push(&mut self, buf: KeptBuf) {
        if self.first.is_none() {
            self.first = Some(buf);
        } else {
            self.rest.push(buf);
        }
    }
}

/// Stores the write just submitted as the one in flight, where nothing is: the empty slot
/// is overwritten without the drop glue an assignment would run on it.
#[inline]
fn set_inflight(st: &mut State, buf: KeptBuf, sent: usize) {
    debug_assert!(st.inflight.is_none());
    std::mem::forget(st.inflight.replace((buf, sent)));
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
