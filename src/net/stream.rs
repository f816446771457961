//! Operations shared by the stream sockets (TCP, Unix).

use std::io;
use std::net::Shutdown as How;

use super::fd::SharedFd;
use super::ops::{Recv, Send, Shutdown};
use crate::buf::{finish_read, BufResult, IoBuf, IoBufMut};
use crate::driver::Op;

pub(crate) async fn read<B: IoBufMut>(fd: &SharedFd, buf: B) -> BufResult<usize, B> {
    let out = Op::new(Recv {
        fd: fd.clone(),
        buf,
    })
    .await;
    finish_read(out.result, out.data.buf)
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
