//! Operations shared by the stream sockets (TCP, Unix).

use std::io;
use std::net::Shutdown as How;

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use super::ops::{
    received, recv_multi_sqe, MultiKeep, Recv, RecvOwned, RecvSelect, Send, SendZc, Shutdown, Stash,
};
use crate::buf::{finish_read, write_all_with, BufResult, IoBuf, IoBufMut};
use crate::driver::bufring::{BufPool, RecvBuf};
use crate::driver::Op;
use crate::fd::SharedFd;
use crate::net::armed::Armed;

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
    stash: Arc<Stash<io::Result<RecvBuf>>>,
    /// The armed multishot receive.
    armed: Armed,
}

/// Receives the next chunk into a loop-owned buffer (none is held while waiting).
///
/// With multishot receives (Linux 6.0+) one RECV stays armed per stream and its CQEs queue in
/// the loop's op table, so a dropped `recv()` future loses nothing. On the single-shot paths
/// a result arriving for a dropped future waits in the stash for the next call. An empty pool
/// (`ENOBUFS`) waits for a buffer to come back and retries; the data stays in the socket.
pub(crate) async fn recv(fd: &SharedFd, rx: &Receiver) -> io::Result<RecvBuf> {
    loop {
        if let Some(r) = rx.stash.pop() {
            return r;
        }
        let (result, flags) = match plan(fd, rx)? {
            Plan::Owned(size) => {
                let mut out = Op::new(RecvOwned {
                    fd: fd.clone(),
                    buf: Vec::with_capacity(size),
                    stash: rx.stash.clone(),
                })
                .await;
                match out.data.received(out.result) {
                    Some(r) => return r,
                    None => continue,
                }
            }
            Plan::Multishot(key) => {
                let c = poll_fn(|cx| rx.armed.poll_next(key, cx)).await;
                (c.result(), c.flags)
            }
            Plan::Single(len, pool) => {
                let out = Op::new(RecvSelect {
                    fd: fd.clone(),
                    pool,
                    len,
                    stash: rx.stash.clone(),
                })
                .await;
                (out.result, out.flags)
            }
        };
        let out_of_buffers =
            matches!(result, Err(ref e) if e.raw_os_error() == Some(libc::ENOBUFS));
        if let Some(r) = with_pool(|pool| received(pool, result, flags)) {
            return r;
        }
        if out_of_buffers {
            poll_fn(|cx| {
                with_pool(|pool| {
                    if pool.available() > 0 {
                        Poll::Ready(())
                    } else {
                        pool.wait_for_buffer(cx.waker());
                        Poll::Pending
                    }
                })
            })
            .await;
        }
    }
}

/// Runs `f` with the current loop's receive pool, borrowed: no reference count is taken on
/// the hot path. Only called on the pooled paths, which `plan` chose because the loop has a
/// pool; a loop's pool is fixed for its life, and the receive is polled on that loop.
fn with_pool<R>(f: impl FnOnce(&BufPool) -> R) -> R {
    crate::driver::with_current(|driver| {
        f(driver
            .pool()
            .expect("the pooled receive path runs only on a loop with a pool"))
    })
    .expect("recv() is polled on the loop it started on")
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

/// Decides the receive path, arming the multishot receive if needed. Synchronous, so the
/// loop's driver (`!Send`) is never held across an await and `recv()` futures stay `Send`.
fn plan(fd: &SharedFd, rx: &Receiver) -> io::Result<Plan> {
    crate::driver::with_current(|driver| plan_on(driver, fd, rx))
        .unwrap_or_else(|| panic!("ringloop: recv() polled outside a running event loop"))
}

fn plan_on(driver: &crate::driver::Driver, fd: &SharedFd, rx: &Receiver) -> io::Result<Plan> {
    let Some(pool) = driver.pool() else {
        return Ok(Plan::Owned(driver.recv_size()));
    };
    if !driver.multishot_recv() {
        let len = u32::try_from(driver.recv_size()).unwrap_or(u32::MAX);
        return Ok(Plan::Single(len, pool.clone()));
    }
    let key = rx.armed.get_or_arm(driver, || {
        fd.claim();
        let keep = MultiKeep {
            fd: fd.clone(),
            pool: pool.clone(),
        };
        driver.arm_stream(recv_multi_sqe(fd), Box::new(keep), 0)
    })?;
    Ok(Plan::Multishot(key))
}

pub(crate) async fn write<B: IoBuf>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let zero_copy = crate::driver::with_current(|d| d.send_zc_threshold())
        .flatten()
        .is_some_and(|t| buf.bytes_init() >= t);
    let buf = if zero_copy {
        let out = Op::new(SendZc {
            fd: fd.clone(),
            buf,
        })
        .await;
        match out.result {
            // The kernel charges a zero-copy send's pinned pages to RLIMIT_MEMLOCK unless the
            // process has CAP_IPC_LOCK in the initial user namespace, which a container's
            // root does not: a large write then fails with ENOMEM (ENOBUFS for the socket's
            // own option memory) before sending a byte. Copy instead; nothing was sent.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::ENOBUFS)) => {
                out.data.buf
            }
            r => return (r.map(|n| n as usize), out.data.buf),
        }
    } else {
        buf
    };
    let out = Op::new(Send {
        fd: fd.clone(),
        buf,
    })
    .await;
    (out.result.map(|n| n as usize), out.data.buf)
}

pub(crate) async fn write_all<B: IoBuf>(fd: &SharedFd, buf: B) -> BufResult<(), B> {
    write_all_with(buf, |rest, _done| write(fd, rest)).await
}

pub(crate) async fn shutdown(fd: &SharedFd, how: How) -> io::Result<()> {
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
