//! The receive side of a stream socket (TCP, Unix): the owned-buffer `read`, and `recv`
//! into loop-owned buffers, which keeps at most one receive in flight per stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use super::ops::{
    filled_buffer, received, received_cqe, recv_multi_sqe, Recv, RecvOwned, RecvSelect,
};
use crate::buf::{finish_read, BufResult, IoBufMut};
use crate::driver::bufring::{BufPool, RecvBuf};
use crate::driver::{Driver, Op, StreamKeep};
use crate::fd::SharedFd;
use crate::net::armed::Armed;
use crate::time::{self, Sleep};
use crate::util::once_arc::OnceArc;

mod take;

pub(crate) async fn read<B: IoBufMut>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let out = Op::new(Recv {
        fd: fd.clone(),
        buf,
    })
    .await;
    finish_read(out.result, out.data.buf)
}

/// The receive side of a stream socket: a multishot receive armed on the loop (its slot key),
/// or, on the single-shot paths, the one receive in flight.
#[derive(Default)]
pub(crate) struct Receiver {
    /// The single-shot paths' receive, made by the first one: a multishot receive keeps its
    /// CQEs in the op table instead, so most streams never need it (an allocation per
    /// connection saved).
    single: OnceArc<Mutex<Single>>,
    /// The armed multishot receive.
    armed: Armed,
    /// The byte-stream traits' reads (see `byte_stream`), made by the first one.
    #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
    bytes: OnceArc<Mutex<ByteReads>>,
}

/// What the byte-stream traits' reads keep between calls: allocated by a stream's first such
/// read, so that a stream that never makes one pays a pointer for them.
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
#[derive(Default)]
pub(crate) struct ByteReads {
    /// The unread part of the last receive buffer, `buf[pos..]`: served first, by the next
    /// read and by `recv()` alike, so that mixing them keeps the bytes' order.
    pub(crate) rest: Option<(RecvBuf, usize)>,
    /// The receive in progress, between polls.
    pub(crate) poll: RecvPoll,
}

#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
impl Receiver {
    /// The byte-stream reads' state, made if this is the stream's first such read.
    pub(crate) fn byte_reads(&self) -> MutexGuard<'_, ByteReads> {
        let bytes = self
            .bytes
            .get_or_init(|| Arc::new(Mutex::new(ByteReads::default())))
            .into_ref();
        // Nothing panics while it is held; a poisoned one is still consistent.
        bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a byte-stream read left of its last buffer, for `recv()`: a buffer holding only
    /// the unread bytes.
    #[cold]
    #[inline(never)]
    fn rest_for_recv(bytes: &Mutex<ByteReads>) -> Option<RecvBuf> {
        let taken = bytes.lock().unwrap_or_else(|e| e.into_inner()).rest.take();
        let (mut buf, pos) = taken?;
        buf.drop_front(pos);
        Some(buf)
    }
}

/// The single-shot paths' receive in flight. The stream owns it, not the `recv()` future that
/// started it: the kernel does not order two receives on one socket, so at most one may be in
/// flight per stream, and a future dropped mid-receive leaves it here for the next call, which
/// takes its result first. Dropping the stream drops it (cancelled; a buffer the kernel picked
/// goes back to the pool).
#[derive(Default)]
struct Single {
    op: Option<SingleOp>,
    /// The tasks of futures waiting on `op`. Its slot wakes only the last to poll it, so the
    /// one that takes the result wakes the others, and a waiting future dropped wakes them all
    /// (one of them must be the slot's waiter again).
    waiters: Vec<Waker>,
}

enum SingleOp {
    /// No buffer ring: a receive into a heap buffer.
    Owned(Op<RecvOwned>),
    /// One buffer-select receive.
    Select(Op<RecvSelect>),
}

/// What a single-shot receive came back with.
enum SingleDone {
    /// The heap-buffer receive's result (`None`: cancelled, nothing to report).
    Owned(Option<io::Result<RecvBuf>>),
    /// The buffer-select receive's result and CQE flags.
    Select(io::Result<u32>, u32),
}

impl Receiver {
    /// Whether a single-shot receive is in flight: one load where the stream never needed
    /// one.
    fn single_in_flight(&self) -> bool {
        self.single
            .get()
            .is_some_and(|s| s.lock().unwrap_or_else(|e| e.into_inner()).op.is_some())
    }

    /// The single-shot receive, made if this is the first call to need it.
    fn single(&self) -> MutexGuard<'_, Single> {
        let single = self
            .single
            .get_or_init(|| Arc::new(Mutex::new(Single::default())))
            .into_ref();
        // Nothing panics while it is held; a poisoned one is still consistent.
        single.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Receives the next chunk into a loop-owned buffer (none is held while waiting).
///
/// With multishot receives (Linux 6.0+) one RECV stays armed per stream and its CQEs queue in
/// the loop's op table; on the single-shot paths the stream owns its one receive in flight
/// (see [`Single`]). Either way a dropped `recv()` future loses nothing and reorders nothing.
/// An empty pool (`ENOBUFS`) waits for a buffer to come back and retries; the data stays in
/// the socket.
///
/// A hand-written future rather than an `async fn`: this is the per-request path of every
/// server, and one poll here is one thread-local lookup of the driver and no nested state
/// machines.
pub(crate) fn recv<'a>(fd: &'a SharedFd, rx: &'a Receiver) -> RecvFuture<'a> {
    RecvFuture {
        fd,
        rx,
        state: RecvState::Idle,
        dry: None,
    }
}

/// How long a receive waits for a buffer to come back to a dry pool before it goes through a
/// heap buffer instead. Buffers come back within a turn or two where tasks drop them as they
/// go; a pool dry for longer is held (by `RecvBuf`s kept until a request is complete, or by
/// streams whose tasks stopped reading), and waiting could then last for ever.
pub(crate) const POOL_DRY_WAIT: Duration = Duration::from_millis(20);

pub(crate) struct RecvFuture<'a> {
    fd: &'a SharedFd,
    rx: &'a Receiver,
    state: RecvState,
    /// In `NoBuffers`: ends the wait for a buffer ([`POOL_DRY_WAIT`]).
    dry: Option<Sleep>,
}

/// What a receive polled by hand keeps between polls, where no future lives across them:
/// the byte-stream traits' reads keep it in the stream's [`ByteReads`] (see [`poll_recv`]).
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
#[derive(Default)]
pub(crate) struct RecvPoll {
    state: RecvState,
    dry: Option<Sleep>,
}

/// Polls a receive whose state is kept in `saved` between polls: `recv()` made into a poll
/// function, with the same guarantees (nothing lost or reordered if it is never polled again).
#[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
pub(crate) fn poll_recv(
    fd: &SharedFd,
    rx: &Receiver,
    saved: &mut RecvPoll,
    cx: &mut Context<'_>,
) -> Poll<io::Result<RecvBuf>> {
    let mut fut = RecvFuture {
        fd,
        rx,
        state: saved.state,
        dry: saved.dry.take(),
    };
    let r = fut.poll_recv(cx);
    // Kept for the next poll, and taken out of the future so that its drop does not leave
    // the stream's single-shot receive (this poller still waits on it).
    saved.state = std::mem::take(&mut fut.state);
    saved.dry = fut.dry.take();
    r
}

impl Drop for RecvFuture<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.state == RecvState::Single {
            self.leave_single();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum RecvState {
    /// Nothing pending: take the path `plan` picks.
    #[default]
    Idle,
    /// Waiting on the stream's single-shot receive (see [`Single`]).
    Single,
    /// The pool was empty (`ENOBUFS`): wait for a buffer to come back, then retry; or, if
    /// none has come back within [`POOL_DRY_WAIT`], receive into a heap buffer.
    NoBuffers,
}

impl Future for RecvFuture<'_> {
    type Output = io::Result<RecvBuf>;

    // Always inlined: see `driver::thread_drivers::with_current`.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<RecvBuf>> {
        // Every field is Unpin (references and a plain enum).
        let this = self.get_mut();
        #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
        if this.state == RecvState::Idle {
            if let Some(bytes) = this.rx.bytes.get() {
                if let Some(buf) = Receiver::rest_for_recv(&bytes) {
                    return Poll::Ready(Ok(buf));
                }
            }
        }
        this.poll_recv(cx)
    }
}

impl RecvFuture<'_> {
    /// The receive itself, without the byte-stream reads' rest: `poll`, and `poll_recv` (on
    /// behalf of those reads, which serve their rest themselves).
    #[inline(always)]
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<RecvBuf>> {
        let this = self;
        crate::driver::with_current(|driver| {
            // The steady state of a busy connection, kept apart from the fallbacks so that
            // it stays small: the armed multishot receive's next CQE, bytes in a pool buffer.
            if let (RecvState::Idle, Some(key)) = (this.state, this.rx.armed.key()) {
                let c = ready!(this.rx.armed.poll_next_on(driver, key, cx));
                if let Some(buf) = filled_buffer(pool_of(driver), c.res, c.flags) {
                    return Poll::Ready(Ok(buf));
                }
                return this.after_cqe(driver, cx, c.result(), c.flags);
            }
            this.poll_on(driver, cx)
        })
        .unwrap_or_else(|| panic!("ringloop: recv() polled outside a running event loop"))
    }

    /// A receive's result that is not bytes in a buffer: end of stream, an error, or one to
    /// retry (`ENOBUFS`, a cancellation).
    #[cold]
    #[inline(never)]
    fn after_cqe(
        &mut self,
        driver: &Driver,
        cx: &mut Context<'_>,
        result: io::Result<u32>,
        flags: u32,
    ) -> Poll<io::Result<RecvBuf>> {
        if let Some(r) = self.settle(driver, result, flags) {
            return Poll::Ready(r);
        }
        self.poll_on(driver, cx)
    }

    /// What `recv()` returns for a receive's result, if anything; on `ENOBUFS` the future
    /// waits for a buffer next.
    fn settle(
        &mut self,
        driver: &Driver,
        result: io::Result<u32>,
        flags: u32,
    ) -> Option<io::Result<RecvBuf>> {
        let out_of_buffers =
            matches!(result, Err(ref e) if e.raw_os_error() == Some(libc::ENOBUFS));
        let r = received(pool_of(driver), result, flags);
        if r.is_none() && out_of_buffers {
            pool_of(driver).starved();
            self.state = RecvState::NoBuffers;
        }
        r
    }

    /// Every path: arming, the single-shot paths of old kernels, an empty pool.
    #[inline(never)]
    fn poll_on(&mut self, driver: &Driver, cx: &mut Context<'_>) -> Poll<io::Result<RecvBuf>> {
        loop {
            let (result, flags) = match self.state {
                RecvState::Idle | RecvState::Single => match plan_on(driver, self.fd, self.rx) {
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(Plan::Multishot(key)) => {
                        let c = ready!(self.rx.armed.poll_next_on(driver, key, cx));
                        if let Some(r) = received_cqe(pool_of(driver), c.res, c.flags) {
                            return Poll::Ready(r);
                        }
                        (c.result(), c.flags)
                    }
                    Ok(plan) => match ready!(self.poll_single(driver, cx, plan)) {
                        SingleDone::Owned(Some(r)) => return Poll::Ready(r),
                        SingleDone::Owned(None) => continue,
                        SingleDone::Select(result, flags) => (result, flags),
                    },
                },
                RecvState::NoBuffers => {
                    let pool = pool_of(driver);
                    if pool.available() != 0 {
                        self.dry = None;
                        self.state = RecvState::Idle;
                        continue;
                    }
                    let dry = self.dry.get_or_insert_with(|| time::sleep(POOL_DRY_WAIT));
                    if Pin::new(dry).poll(cx).is_pending() {
                        pool.wait_for_buffer(cx.waker());
                        return Poll::Pending;
                    }
                    // The pool stayed dry: this one receive goes through a heap buffer.
                    self.dry = None;
                    pool.fell_back();
                    let size = driver.recv_size();
                    match ready!(self.poll_single(driver, cx, Plan::Owned(size))) {
                        SingleDone::Owned(Some(r)) => return Poll::Ready(r),
                        SingleDone::Owned(None) => continue,
                        SingleDone::Select(result, flags) => (result, flags),
                    }
                }
            };
            if let Some(r) = self.settle(driver, result, flags) {
                return Poll::Ready(r);
            }
        }
    }

    /// Polls the stream's single-shot receive, starting one as `plan` says if none is in
    /// flight (see [`Single`]).
    #[cold]
    fn poll_single(
        &mut self,
        driver: &Driver,
        cx: &mut Context<'_>,
        plan: Plan,
    ) -> Poll<SingleDone> {
        let mut single = self.rx.single();
        let op = single.op.get_or_insert_with(|| match plan {
            Plan::Owned(size) => SingleOp::Owned(Op::new(RecvOwned {
                fd: self.fd.clone(),
                buf: Vec::with_capacity(size),
            })),
            Plan::Single(len, pool) => SingleOp::Select(Op::new(RecvSelect {
                fd: self.fd.clone(),
                pool,
                len,
            })),
            Plan::Multishot(_) => unreachable!("the multishot path has no single-shot receive"),
        });
        let done = match op {
            SingleOp::Owned(op) => op
                .poll_on(driver, cx)
                .map(|mut out| SingleDone::Owned(out.data.received(out.result))),
            SingleOp::Select(op) => op
                .poll_on(driver, cx)
                .map(|out| SingleDone::Select(out.result, out.flags)),
        };
        let Poll::Ready(done) = done else {
            if !single.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                single.waiters.push(cx.waker().clone());
            }
            self.state = RecvState::Single;
            return Poll::Pending;
        };
        // Its outcome was handed out: the op's drop has nothing to cancel or release.
        let finished = single.op.take();
        let mut others = std::mem::take(&mut single.waiters);
        drop(single);
        drop(finished);
        others.retain(|w| !w.will_wake(cx.waker()));
        for w in others {
            w.wake();
        }
        self.state = RecvState::Idle;
        Poll::Ready(done)
    }

    /// A future waiting on the stream's single-shot receive is dropped; it may have been the
    /// one its slot would wake, so every other waiter is woken to poll again.
    #[cold]
    #[inline(never)]
    fn leave_single(&mut self) {
        let waiters = std::mem::take(&mut self.rx.single().waiters);
        for w in waiters {
            w.wake();
        }
    }
}

/// The loop's receive pool. Only called on the pooled paths, which `plan_on` chose because the
/// loop has a pool; a loop's pool is fixed for its life, and a receive is polled on one loop
/// (its op or armed slot checks that).
#[inline]
fn pool_of(driver: &Driver) -> &BufPool {
    driver
        .pool()
        .expect("the pooled receive path runs only on a loop with a pool")
}

/// How the next receive runs on the current loop.
enum Plan {
    /// No buffer ring: a heap buffer of this size.
    Owned(usize),
    /// The armed multishot receive in this slot.
    Multishot(usize),
    /// One buffer-select receive of at most this many bytes.
    Single(u32, BufPool),
}

/// Decides the receive path, arming the multishot receive if needed.
#[inline]
fn plan_on(driver: &Driver, fd: &SharedFd, rx: &Receiver) -> io::Result<Plan> {
    // An armed multishot receive is the steady state of a busy connection.
    if let Some(key) = rx.armed.key() {
        return Ok(Plan::Multishot(key));
    }
    plan_unarmed(driver, fd, rx)
}

#[cold]
fn plan_unarmed(driver: &Driver, fd: &SharedFd, rx: &Receiver) -> io::Result<Plan> {
    let Some(pool) = driver.pool() else {
        return Ok(Plan::Owned(driver.recv_size()));
    };
    if !driver.multishot_recv() {
        let len = u32::try_from(driver.recv_size()).unwrap_or(u32::MAX);
        return Ok(Plan::Single(len, pool.clone()));
    }
    if rx.single_in_flight() {
        // A heap-buffer receive is in flight (a dry pool's, whose future was dropped): it
        // is the stream's one receive until it completes.
        return Ok(Plan::Owned(driver.recv_size()));
    }
    let key = rx.armed.get_or_arm(driver, || {
        fd.claim_on(driver.id());
        // The descriptor stays open until the final CQE, and the buffers of CQEs nobody takes
        // go back to the pool.
        let keep = StreamKeep::Buffers {
            hold: fd.hold(),
            pool: pool.clone(),
        };
        let cap = pool.stream_cap();
        driver.arm_stream(recv_multi_sqe(fd), keep, cap)
    })?;
    Ok(Plan::Multishot(key))
}
