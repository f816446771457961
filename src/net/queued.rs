//! Queued writes: a stream's writes that resolve once the loop holds their buffer, not once
//! the kernel has sent it (`write_queued`), and the `flush` that waits for them.
//!
//! io_uring does not order two sends on one socket, so one queued write per stream is in the
//! kernel at a time: a SEND whose owner is the stream's [`WriteQueue`] (a detached op), the
//! rest waiting here in order. Its CQE is handled by the loop itself
//! ([`Detached::complete`]), which resumes a short send, then submits the next write. No task
//! is woken for it: a request/response server polls its task once per request instead of
//! twice (once for the request, once more for the reply's completion).
//!
//! Ownership: a queued buffer belongs to the queue from the moment `write_queued` resolves.
//! The one in flight is taken out only by `complete`, after its CQE; the slot's reference to
//! the queue keeps it alive meanwhile, however the stream is dropped, and a loop that must
//! abandon the op at close leaks that reference (and so the buffer) rather than free it.
//!
//! The first failure is kept: the writes still waiting are dropped unsent (the byte stream
//! has a hole from there on), and every later write, queued or not, flush and shutdown of
//! the stream returns it.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types};

use crate::buf::kept::KeptBuf;
use crate::buf::IoBuf;
use crate::driver::loop_cell::{LoopCell, LoopRef};
use crate::driver::slot::{Completion, Detached};
use crate::driver::Driver;
use crate::fd::SharedFd;

/// A `write_queued` waits while this many bytes are queued and not yet sent...
pub(crate) const BACKLOG_BYTES: usize = 256 * 1024;
/// ... or while this many writes wait behind the one in the kernel.
pub(crate) const BACKLOG_WRITES: usize = 64;

/// The write side of a stream socket: its queue, made on the first queued write.
#[derive(Default)]
pub(crate) struct Sender {
    queue: OnceLock<Arc<WriteQueue>>,
}

impl Sender {
    /// The queue, made for `driver`'s loop on the first queued write.
    fn queue(&self, fd: &SharedFd, driver: &Driver) -> &Arc<WriteQueue> {
        self.queue.get_or_init(|| {
            Arc::new(WriteQueue {
                fd: fd.clone(),
                clear: AtomicBool::new(true),
                state: LoopCell::new(driver, State::default()),
            })
        })
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
    /// The write in the kernel and how many of its bytes were sent before this SEND.
    inflight: Option<(KeptBuf, usize)>,
    /// Writes behind it, oldest first.
    waiting: VecDeque<KeptBuf>,
    /// Bytes of `inflight` and `waiting` not yet sent.
    backlog: usize,
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

impl State {
    fn register(&mut self, waker: &Waker) {
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
    }

    /// Whether a new write must wait for room.
    fn full(&self) -> bool {
        self.inflight.is_some()
            && (self.backlog >= BACKLOG_BYTES || self.waiting.len() >= BACKLOG_WRITES)
    }

    /// Records `e` as the queue's failure; returns the writes that will never be sent, to be
    /// dropped once the borrow has ended.
    fn fail(&mut self, e: &io::Error) -> VecDeque<KeptBuf> {
        if self.failed.is_none() {
            self.failed = Some(Failure::of(e));
        }
        self.backlog = 0;
        std::mem::take(&mut self.waiting)
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

    /// Submits `buf[sent..]` as a SEND owned by this queue. The caller stores `buf` as
    /// `inflight` right after, where it stays until the SEND's CQE.
    #[inline]
    fn submit(self: &Arc<Self>, driver: &Driver, buf: &KeptBuf, sent: usize) -> io::Result<()> {
        let sent = sent.min(buf.len());
        let len = u32::try_from(buf.len() - sent).unwrap_or(u32::MAX);
        // SAFETY: `sent <= len()`, so the pointer is inside (or one past) the buffer's bytes,
        // which stay put while `buf` lives (IoBuf). The queue keeps `buf` as `inflight` until
        // this op's CQE, and the slot keeps the queue alive until then.
        let ptr = unsafe { buf.ptr().add(sent) };
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, never a process-killing SIGPIPE.
        let sqe = opcode::Send::new(types::Fd(self.fd.raw()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        driver.submit_detached(sqe, self.clone()).map(drop)
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
            st.register(cx.waker());
            return Poll::Pending;
        }
        let kept = KeptBuf::new(b);
        let len = kept.len();
        if st.inflight.is_none() {
            if let Err(e) = self.submit(driver, &kept, 0) {
                // Refused (the loop is closed, say): nothing of it was sent, the stream is
                // intact, and the buffer is dropped once the borrow has ended.
                drop(st);
                drop(kept);
                return Poll::Ready(Err(e));
            }
            set_inflight(&mut st, kept, 0);
            self.clear.store(false, Ordering::Release);
        } else {
            st.waiting.push_back(kept);
        }
        st.backlog += len;
        Poll::Ready(Ok(()))
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
        st.register(cx.waker());
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
                let done = st.inflight.take();
                self.clear.store(true, Ordering::Release);
                drop(st);
                drop(done);
                return;
            }
        }
        let Some((buf, mut sent)) = st.inflight.take() else {
            return; // no write of ours is in flight: a stray CQE
        };
        // What is done with is dropped once the borrow has ended: a buffer's `Drop` is the
        // user's. The kernel has finished with `buf`: this was its SEND's only CQE.
        let mut done = None;
        // The write to send next (`buf` again if it was short), or why the queue stops.
        let mut failure = None;
        let next = match c.result() {
            Ok(0) => {
                done = Some(buf);
                failure = Some(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "a queued write could send no more bytes",
                ));
                None
            }
            Ok(n) => {
                let n = (n as usize).min(buf.len() - sent);
                sent += n;
                st.backlog -= n;
                if sent < buf.len() {
                    Some((buf, sent))
                } else {
                    done = Some(buf);
                    st.waiting.pop_front().map(|b| (b, 0))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Some((buf, sent)),
            Err(e) => {
                done = Some(buf);
                failure = Some(e);
                None
            }
        };
        if let Some((b, s)) = next {
            match self.submit(driver, &b, s) {
                Ok(()) => set_inflight(&mut st, b, s),
                Err(e) => {
                    // Never reached the kernel: dropped with the rest of the queue.
                    st.waiting.push_front(b);
                    failure = Some(e);
                }
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
