//! Operations shared by the stream sockets (TCP, Unix).

use std::io;
use std::net::Shutdown as How;

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use super::ops::{
    filled_buffer, received, received_cqe, recv_multi_sqe, Recv, RecvOwned, RecvSelect, Send,
    Shutdown, Stash,
};
use crate::buf::{finish_read, BufResult, IoBuf, IoBufMut};
use crate::driver::bufring::{BufPool, RecvBuf};
use crate::driver::{Driver, Op, StreamKeep};
use crate::fd::SharedFd;
use crate::net::armed::Armed;
use crate::net::queued::Sender;
use crate::util::once_arc::OnceArc;

pub(crate) async fn read<B: IoBufMut>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let out = Op::new(Recv {
        fd: fd.clone(),
        buf,
    })
    .await;
    finish_read(out.result, out.data.buf)
}

/// The receive side of a stream socket: a multishot receive armed on the loop (its slot key),
/// and results kept for dropped `recv()` futures on the single-shot paths.
#[derive(Default)]
pub(crate) struct Receiver {
    /// Made by the first single-shot receive: a multishot receive keeps its CQEs in the op
    /// table instead, so most streams never need one (an allocation per connection saved).
    stash: OnceArc<Stash<io::Result<RecvBuf>>>,
    /// The armed multishot receive.
    armed: Armed,
}

impl Receiver {
    /// The stash, made if this is the first op to need one.
    fn stash_for_op(&self) -> Arc<Stash<io::Result<RecvBuf>>> {
        self.stash
            .get_or_init(|| Arc::new(Stash::default()))
            .clone()
    }
}

/// Receives the next chunk into a loop-owned buffer (none is held while waiting).
///
/// With multishot receives (Linux 6.0+) one RECV stays armed per stream and its CQEs queue in
/// the loop's op table, so a dropped `recv()` future loses nothing. On the single-shot paths
/// a result arriving for a dropped future waits in the stash for the next call. An empty pool
/// (`ENOBUFS`) waits for a buffer to come back and retries; the data stays in the socket.
///
/// A hand-written future rather than an `async fn`: this is the per-request path of every
/// server, and one poll here is one thread-local lookup of the driver and no nested state
/// machines.
pub(crate) fn recv<'a>(fd: &'a SharedFd, rx: &'a Receiver) -> RecvFuture<'a> {
    RecvFuture {
        fd,
        rx,
        state: ManuallyDrop::new(RecvState::Idle),
    }
}

pub(crate) struct RecvFuture<'a> {
    fd: &'a SharedFd,
    rx: &'a Receiver,
    /// Dropped by hand (see `Drop`): the drop of the common states is then a check, inlined
    /// into the caller, rather than a call to the glue of the fallbacks' ops. Assigned only
    /// through the `ManuallyDrop`, so that the old state is dropped as usual.
    state: ManuallyDrop<RecvState>,
}

impl Drop for RecvFuture<'_> {
    #[inline]
    fn drop(&mut self) {
        if matches!(*self.state, RecvState::Owned(_) | RecvState::Single(_)) {
            // SAFETY: this is the future's drop, so the state is dropped once and not used
            // after.
            unsafe { self.drop_state() };
        }
    }
}

enum RecvState {
    /// Nothing in flight: check the stash, then take the path `plan` picks.
    Idle,
    /// No buffer ring: a receive into a heap buffer.
    Owned(Op<RecvOwned>),
    /// One buffer-select receive.
    Single(Op<RecvSelect>),
    /// The pool was empty (`ENOBUFS`): wait for a buffer to come back, then retry.
    NoBuffers,
}

impl Future for RecvFuture<'_> {
    type Output = io::Result<RecvBuf>;

    // Always inlined: see `driver::registry::with_current`.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<RecvBuf>> {
        // Every field is Unpin (references and `Op`s).
        let this = self.get_mut();
        crate::driver::with_current(|driver| {
            // The steady state of a busy connection, kept apart from the fallbacks so that
            // it stays small: the armed multishot receive's next CQE, bytes in a pool buffer.
            if let (RecvState::Idle, false, Some(key)) = (
                &*this.state,
                this.rx.stash.get().is_some_and(|s| s.maybe_nonempty()),
                this.rx.armed.key(),
            ) {
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
}

impl RecvFuture<'_> {
    /// Drops the state (an op of the fallbacks) out of line.
    ///
    /// # Safety
    ///
    /// Only from `drop`: the state must not be dropped twice or used after.
    #[cold]
    #[inline(never)]
    unsafe fn drop_state(&mut self) {
        // SAFETY: the caller's contract (once, and nothing after).
        unsafe { ManuallyDrop::drop(&mut self.state) }
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
            *self.state = RecvState::NoBuffers;
        }
        r
    }

    /// Every path: the stash, arming, the fallbacks of old kernels, an empty pool.
    #[inline(never)]
    fn poll_on(&mut self, driver: &Driver, cx: &mut Context<'_>) -> Poll<io::Result<RecvBuf>> {
        loop {
            let (result, flags) = match &mut *self.state {
                RecvState::Idle => {
                    if let Some(r) = self.rx.stash.get().and_then(|s| s.pop()) {
                        return Poll::Ready(r);
                    }
                    match plan_on(driver, self.fd, self.rx) {
                        Err(e) => return Poll::Ready(Err(e)),
                        Ok(Plan::Multishot(key)) => {
                            let c = ready!(self.rx.armed.poll_next_on(driver, key, cx));
                            if let Some(r) = received_cqe(pool_of(driver), c.res, c.flags) {
                                return Poll::Ready(r);
                            }
                            (c.result(), c.flags)
                        }
                        Ok(Plan::Owned(size)) => {
                            *self.state = RecvState::Owned(Op::new(RecvOwned {
                                fd: self.fd.clone(),
                                buf: Vec::with_capacity(size),
                                stash: self.rx.stash_for_op(),
                            }));
                            continue;
                        }
                        Ok(Plan::Single(len, pool)) => {
                            *self.state = RecvState::Single(Op::new(RecvSelect {
                                fd: self.fd.clone(),
                                pool,
                                len,
                                stash: self.rx.stash_for_op(),
                            }));
                            continue;
                        }
                    }
                }
                RecvState::Owned(op) => {
                    let mut out = ready!(op.poll_on(driver, cx));
                    *self.state = RecvState::Idle;
                    match out.data.received(out.result) {
                        Some(r) => return Poll::Ready(r),
                        None => continue,
                    }
                }
                RecvState::Single(op) => {
                    let out = ready!(op.poll_on(driver, cx));
                    *self.state = RecvState::Idle;
                    (out.result, out.flags)
                }
                RecvState::NoBuffers => {
                    let pool = pool_of(driver);
                    if pool.available() == 0 {
                        pool.wait_for_buffer(cx.waker());
                        return Poll::Pending;
                    }
                    *self.state = RecvState::Idle;
                    continue;
                }
            };
            if let Some(r) = self.settle(driver, result, flags) {
                return Poll::Ready(r);
            }
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
    let key = rx.armed.get_or_arm(driver, || {
        fd.claim_on(driver.id());
        // The descriptor stays open until the final CQE, and the buffers of CQEs nobody takes
        // go back to the pool.
        let keep = StreamKeep::Buffers {
            hold: fd.hold(),
            pool: pool.clone(),
        };
        driver.arm_stream(recv_multi_sqe(fd), keep, 0)
    })?;
    Ok(Plan::Multishot(key))
}

/// One send of `buf` (`all == false`: the result is what the kernel took), or a loop of sends
/// until all of it is written (`all == true`: the result is the total). Writes of at least the
/// loop's threshold use SEND_ZC. It goes after the stream's queued writes (see `queued`).
pub(crate) fn send<'a, B: IoBuf>(
    fd: &SharedFd,
    tx: &'a Sender,
    buf: B,
    all: bool,
) -> SendFuture<'a, B> {
    SendFuture {
        tx,
        op: Op::new(Send {
            fd: fd.clone(),
            buf,
            offset: 0,
            zero_copy: false,
        }),
        all,
        fresh: true,
        zero_copy_failed: false,
    }
}

/// The future of [`send`]: one `Op` resubmitted from where the last send stopped, so a short
/// write costs one more SQE and nothing else.
pub(crate) struct SendFuture<'a, B: IoBuf> {
    /// Queued writes go first.
    tx: &'a Sender,
    op: Op<Send<B>>,
    all: bool,
    /// Not yet polled: the first send still has to pick copy or zero-copy.
    fresh: bool,
    /// A zero-copy send failed for lack of lockable memory: copy from then on.
    zero_copy_failed: bool,
}

impl<B: IoBuf> Future for SendFuture<'_, B> {
    type Output = BufResult<usize, B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult<usize, B>> {
        // `Op` is Unpin and so are the flags.
        let this = self.get_mut();
        crate::driver::with_current(|driver| this.poll_on(driver, cx))
            .unwrap_or_else(|| panic!("ringloop: a write was polled outside a running event loop"))
    }
}

impl<B: IoBuf> SendFuture<'_, B> {
    fn poll_on(&mut self, driver: &Driver, cx: &mut Context<'_>) -> Poll<BufResult<usize, B>> {
        if self.fresh {
            if !self.tx.clear() {
                if let Err(e) = ready!(self.tx.poll_flush_on(driver, cx)) {
                    let data = self
                        .op
                        .take_unsubmitted()
                        .expect("not submitted before flush");
                    return Poll::Ready((Err(e), data.buf));
                }
            }
            self.fresh = false;
            if let Some(data) = self.op.unsubmitted_mut() {
                if self.all && data.remaining() == 0 {
                    // Nothing to write: no SQE at all.
                    let data = self.op.take_unsubmitted().expect("checked above");
                    return Poll::Ready((Ok(0), data.buf));
                }
                prepare(data, driver, true);
            }
        }
        loop {
            let out = ready!(self.op.poll_on(driver, cx));
            let mut data = out.data;
            match out.result {
                // The kernel charges a zero-copy send's pinned pages to RLIMIT_MEMLOCK unless
                // the process has CAP_IPC_LOCK in the initial user namespace, which a
                // container's root does not: a large send then fails with ENOMEM (ENOBUFS for
                // the socket's option memory) before sending a byte. Copy instead.
                Err(e)
                    if data.zero_copy
                        && matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::ENOBUFS)) =>
                {
                    data.zero_copy = false;
                    self.zero_copy_failed = true;
                    self.op = Op::new(data);
                    continue;
                }
                Err(e) if self.all && e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready((Err(e), data.buf)),
                Ok(0) if self.all => {
                    let e =
                        io::Error::new(io::ErrorKind::WriteZero, "no more bytes could be written");
                    return Poll::Ready((Err(e), data.buf));
                }
                Ok(n) => {
                    data.offset += n as usize;
                    if !self.all || data.remaining() == 0 {
                        return Poll::Ready((Ok(data.offset), data.buf));
                    }
                }
            }
            prepare(&mut data, driver, !self.zero_copy_failed);
            self.op = Op::new(data);
        }
    }
}

/// [`send`] with `all`, resolving to `()`: what `write_all` returns.
pub(crate) struct WriteAll<'a, B: IoBuf>(SendFuture<'a, B>);

pub(crate) fn write_all<'a, B: IoBuf>(fd: &SharedFd, tx: &'a Sender, buf: B) -> WriteAll<'a, B> {
    WriteAll(send(fd, tx, buf, true))
}

impl<B: IoBuf> Future for WriteAll<'_, B> {
    type Output = BufResult<(), B>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult<(), B>> {
        let (r, buf) = ready!(Pin::new(&mut self.get_mut().0).poll(cx));
        Poll::Ready((r.map(drop), buf))
    }
}

/// Waits until the stream's queued writes are sent; the first error one of them met.
pub(crate) async fn flush(tx: &Sender) -> io::Result<()> {
    if tx.clear() {
        return Ok(());
    }
    std::future::poll_fn(|cx| tx.poll_flush(cx)).await
}

/// Readies `data` for its next submission on `driver`'s loop: claims the socket for the loop
/// and picks copy or (if allowed) zero-copy for what is left to send.
#[inline]
fn prepare<B: IoBuf>(data: &mut Send<B>, driver: &Driver, zero_copy_allowed: bool) {
    data.fd.claim_on(driver.id());
    data.zero_copy = zero_copy_allowed
        && driver
            .send_zc_threshold()
            .is_some_and(|t| data.remaining() >= t);
}

/// Shuts down `how`, a write side once the stream's queued writes are sent (a FIN must not
/// overtake them).
pub(crate) async fn shutdown(fd: &SharedFd, tx: &Sender, how: How) -> io::Result<()> {
    if how != How::Read {
        flush(tx).await?;
    }
    let how = match how {
        How::Read => libc::SHUT_RD,
        How::Write => libc::SHUT_WR,
        How::Both => libc::SHUT_RDWR,
    };
    Op::new(Shutdown {
        fd: fd.clone(),
        how,
    })
    .await
    .result
    .map(|_| ())
}
