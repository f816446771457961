//! The awaited write side of a stream socket (TCP, Unix): `write`, `write_all`, `flush` and
//! `shutdown`, each ordered after the stream's queued writes (see `write_queue`).

use std::future::Future;
use std::io;
use std::net::Shutdown as How;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::ops::{Send, Shutdown};
use super::write_queue::Sender;
use crate::buf::{BufResult, IoBuf};
use crate::driver::{Driver, Op};
use crate::fd::SharedFd;

/// One send of `buf` (`all == false`: the result is what the kernel took), or a loop of sends
/// until all of it is written (`all == true`: the result is the total). Writes of at least the
/// loop's threshold use SEND_ZC. It goes after the stream's queued writes (see `write_queue`).
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
            wait_all: all,
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
