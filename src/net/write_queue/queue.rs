//! `WriteQueue`: a stream's queued writes and the one op of them in the kernel (see the
//! module doc of `write_queue`): taking writes in, submitting the front as a SEND or a
//! SENDMSG, and the loop's handling of that op's completion.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::{opcode, types};

use super::state::{
    set_inflight, Done, State, Trial, Vectors, MAX_BATCH, TRY_MAX, UNTRIED_AFTER_SHORT,
};
use crate::buf::kept::KeptBuf;
use crate::buf::IoBuf;
use crate::driver::completion::{Completion, Detached};
use crate::driver::loop_cell::{LoopCell, LoopRef};
use crate::driver::Driver;
use crate::fd::SharedFd;

pub(crate) struct WriteQueue {
    /// A clone: the descriptor stays open until the last queued write is done.
    pub(super) fd: SharedFd,
    /// Mirrors "nothing waiting or in flight, no failure" for [`Sender::clear`].
    pub(super) clear: AtomicBool,
    /// Touched only on the thread of the loop serving the stream: no lock on the path of
    /// every reply.
    pub(super) state: LoopCell<State>,
}

/// The flag of a plain (not tried) send: `MSG_WAITALL`, so that where the socket's buffer
/// takes only part of the op (a slow reader), the kernel sends the rest as room frees up and
/// posts one CQE for the whole (Linux 5.19+; older kernels post short counts, which
/// `complete` resumes). Without it, each part would be a CQE, a wake-up of a sleeping loop
/// and a new SQE. Short only on an error after some progress, or a cancellation at close,
/// where `complete` cannot submit again and the queue fails.
const SEND_ALL: i32 = libc::MSG_WAITALL;

impl WriteQueue {
    /// The state, on `driver`'s loop (it panics on another). Released before a buffer is
    /// dropped or a waker woken; should other user code reached under it (an `IoBuf` or
    /// waker method) come back here, the second borrow panics rather than alias.
    #[inline]
    pub(super) fn borrow(&self, driver: &Driver) -> LoopRef<'_, State> {
        self.state.borrow(driver)
    }

    /// Submits `buf[sent..]` as a SEND owned by this queue, tried at submit with `trial` (see
    /// `Driver::submit_detached_tried`). The caller stores `buf` as `inflight` right after,
    /// where it stays until the SEND's CQE.
    #[inline]
    pub(super) fn submit(
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
            libc::MSG_NOSIGNAL | SEND_ALL
        };
        let sqe = opcode::Send::new(types::Fd(self.fd.raw()), ptr, len)
            .flags(flags)
            .build();
        driver
            .submit_detached_tried(sqe, self.clone(), trial)
            .map(drop)
    }

    /// Submits the whole of `buf`, a stream's first write, as a quiet try owned by this queue
    /// (see `driver::quiet`): the driver tells the queue once it is done, and its CQE comes
    /// only if it fell short. The caller stores `buf` as `inflight` right after.
    fn submit_quiet(self: &Arc<Self>, driver: &Driver, buf: &KeptBuf) -> io::Result<()> {
        // The SQE points at `buf`'s bytes, which stay put while it lives (IoBuf); the queue
        // keeps it as `inflight` until the driver confirms the try or hands on its CQE, and
        // the slot keeps the queue alive until then.
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        // MSG_WAITALL: a short send is a failure, which posts its CQE. MSG_NOSIGNAL and
        // MSG_DONTWAIT as in `submit`.
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | libc::MSG_WAITALL;
        let sqe = opcode::Send::new(types::Fd(self.fd.raw()), buf.ptr(), len)
            .flags(flags)
            .build();
        driver
            .submit_detached_quiet(sqe, self.clone(), len)
            .map(drop)
    }

    /// Submits the queue's front, with nothing in flight: a SEND of the oldest write's rest,
    /// or, with writes waiting behind it, one SENDMSG carrying them all (up to
    /// [`MAX_BATCH`]), so that a backlog drains in one op rather than one op per write.
    pub(super) fn submit_next(self: &Arc<Self>, driver: &Driver, st: &mut State) -> io::Result<()> {
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
            .flags((libc::MSG_NOSIGNAL | SEND_ALL) as u32)
            .build();
        driver.submit_detached(sqe, self.clone())?;
        *batched = more;
        Ok(())
    }

    /// Takes `buf` into the queue (submitting it if nothing is in flight), or waits for room.
    // Always: called from one place, `QueuedWrite::poll`, on every reply; whether the
    // compiler inlines it otherwise depends on how the crate is split into code-generation
    // units.
    #[inline(always)]
    pub(super) fn offer<B: IoBuf + Send>(
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
    /// queue is full, so a peer that does not read holds at most
    /// [`BACKLOG_BYTES`](super::BACKLOG_BYTES) (plus the one write in flight) of the stream's
    /// memory.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(crate) fn poll_copy(
        self: &Arc<Self>,
        driver: &Driver,
        bufs: &[io::IoSlice<'_>],
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut st = self.borrow(driver);
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
        if st.full() {
            st.register(cx.waker(), driver);
            return Poll::Pending;
        }
        // Not full: with a write in flight the backlog is below the bound, and without one
        // it is empty, so there is room for at least one byte.
        let room = super::BACKLOG_BYTES.saturating_sub(st.backlog).max(1);
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
    pub(super) fn push(
        self: &Arc<Self>,
        driver: &Driver,
        mut st: LoopRef<'_, State>,
        kept: KeptBuf,
        tries_ok: bool,
    ) -> Poll<io::Result<()>> {
        let len = kept.len();
        if st.inflight.is_none() {
            let submitted = if st.untried != 0 {
                self.submit_untried(driver, &mut st, &kept, tries_ok)
            } else {
                let trial = tries_ok
                    && len <= TRY_MAX
                    && *st
                        .watched
                        .get_or_insert_with(|| driver.watch_writable(self.fd.raw()));
                // A stale `Counted` (left by a try completed on the fast path below) is
                // overwritten below, and never read before: only an op in flight is asked.
                self.submit(driver, &kept, 0, trial).map(|()| {
                    if trial {
                        Trial::Counted
                    } else {
                        Trial::No
                    }
                })
            };
            match submitted {
                Ok(trial) => {
                    set_inflight(&mut st, kept, 0);
                    st.trial = trial;
                    self.clear.store(false, Ordering::Release);
                }
                Err(e) => {
                    // Refused (the loop is closed, say): nothing of it was sent, the stream
                    // is intact, and the buffer is dropped once the borrow has ended.
                    drop(st);
                    drop(kept);
                    return Poll::Ready(Err(e));
                }
            }
        } else {
            // Its submission waits for the op in flight's completion.
            st.uncount(driver);
            st.waiting.push_back(kept);
        }
        st.backlog += len;
        driver.queued_add(len);
        Poll::Ready(Ok(()))
    }

    /// Submits `kept`, a fresh write that goes untried: plainly, or, the stream's first, as a
    /// quiet try where the driver has them (see the module doc); how it went, for
    /// [`push`](Self::push). Apart, so that the path of every other reply stays as short as
    /// it was.
    #[cold]
    #[inline(never)]
    fn submit_untried(
        self: &Arc<Self>,
        driver: &Driver,
        st: &mut State,
        kept: &KeptBuf,
        tries_ok: bool,
    ) -> io::Result<Trial> {
        st.untried -= 1;
        let quiet = std::mem::take(&mut st.fresh)
            && tries_ok
            && kept.len() <= TRY_MAX
            && driver.quiet_tries();
        if quiet {
            self.submit_quiet(driver, kept).map(|()| Trial::Quiet)
        } else {
            self.submit(driver, kept, 0, false).map(|()| Trial::No)
        }
    }

    /// Ready once every accepted byte is carried by the one send in flight (or sent): the
    /// queue holds nothing the loop has yet to hand to the kernel. A send in flight is
    /// submitted, or sits in the submission queue that the loop submits before it next
    /// waits. The byte-stream traits' flush: a reply costs no task wake-up for its
    /// completion, as with tokio, where a write's bytes are in the kernel once accepted.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    pub(super) fn poll_handed_over(
        &self,
        driver: &Driver,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
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

    pub(super) fn poll_flush(&self, driver: &Driver, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
                driver.queued_sub(rest);
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
                let before = st.backlog;
                st.consume(n as usize, &mut done);
                driver.queued_sub(before - st.backlog);
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
            driver.queued_sub(st.backlog);
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
