//! Operations shared by the stream sockets (TCP, Unix).

use std::io;
use std::net::Shutdown as How;

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use super::ops::{Recv, RecvOwned, RecvSelect, Send, Shutdown, Stash};
use crate::buf::{finish_read, BufResult, IoBuf, IoBufMut};
use crate::driver::bufring::RecvBuf;
use crate::driver::Op;
use crate::fd::SharedFd;

pub(crate) async fn read<B: IoBufMut>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let out = Op::new(Recv {
        fd: fd.clone(),
        buf,
    })
    .await;
    finish_read(out.result, out.data.buf)
}

/// Receives into a buffer the kernel picks from the loop's pool when data arrives (none is
/// held while waiting). Cancel-safe: a result that arrives for a dropped future waits in
/// `stash` for the next call. An empty pool (`ENOBUFS`) waits for a buffer to come back and
/// retries; the data stays in the socket meanwhile.
pub(crate) async fn recv(
    fd: &SharedFd,
    stash: &Arc<Stash<io::Result<RecvBuf>>>,
) -> io::Result<RecvBuf> {
    loop {
        if let Some(r) = stash.pop() {
            return r;
        }
        let driver = crate::driver::current()
            .unwrap_or_else(|| panic!("ringloop: recv() polled outside a running event loop"));
        let Some(pool) = driver.pool().cloned() else {
            // No provided-buffer rings: a heap buffer per receive.
            let size = driver.recv_size();
            drop(driver);
            let mut out = crate::driver::Op::new(RecvOwned {
                fd: fd.clone(),
                buf: Vec::with_capacity(size),
                stash: stash.clone(),
            })
            .await;
            match out.data.received(out.result) {
                Some(r) => return r,
                None => continue,
            }
        };
        let len = u32::try_from(driver.recv_size()).unwrap_or(u32::MAX);
        drop(driver);
        let out = crate::driver::Op::new(RecvSelect {
            fd: fd.clone(),
            pool: pool.clone(),
            len,
            stash: stash.clone(),
        })
        .await;
        let out_of_buffers =
            matches!(out.result, Err(ref e) if e.raw_os_error() == Some(libc::ENOBUFS));
        if let Some(r) = out.data.received(out.result, out.flags) {
            return r;
        }
        if out_of_buffers {
            poll_fn(|cx| {
                if pool.available() > 0 {
                    Poll::Ready(())
                } else {
                    pool.wait_for_buffer(cx.waker());
                    Poll::Pending
                }
            })
            .await;
        }
    }
}

pub(crate) async fn write<B: IoBuf>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let out = Op::new(Send {
        fd: fd.clone(),
        buf,
    })
    .await;
    (out.result.map(|n| n as usize), out.data.buf)
}

pub(crate) async fn write_all<B: IoBuf>(fd: &SharedFd, mut buf: B) -> BufResult<(), B> {
    let len = buf.bytes_init();
    let mut pos = 0;
    while pos < len {
        let (r, slice) = write(fd, buf.slice(pos..len)).await;
        buf = slice.into_inner();
        match r {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the socket accepted no more bytes",
                );
                return (Err(e), buf);
            }
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
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
