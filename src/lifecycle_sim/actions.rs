//! What a program's tasks do: reads into their own buffers, no-ops, and streams that
//! receive and write, each with futures awaited, dropped mid-way, cancelled or timed out.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::random;
use super::sim_buf::SimBuf;
use crate::buf::IoBufMut;
use crate::driver::{ops, Op};
use crate::net::{TcpListener, TcpStream};
use crate::sys::sim;

thread_local! {
    /// Descriptor numbers for reads: far above any real one, never closed.
    static NEXT_FD: std::cell::Cell<i32> = const { std::cell::Cell::new(1_500_000_000) };
}

fn next_fd() -> i32 {
    NEXT_FD.with(|n| {
        let fd = n.get();
        n.set(fd + 1);
        fd
    })
}

/// Polls `fut` up to `polls` times, yielding to the loop between polls, and drops it unless
/// it finished.
pub(super) async fn poll_then_drop<F: Future>(fut: F, polls: u64) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(v) = polled {
            return Some(v);
        }
        crate::yield_now().await;
    }
    None
}

/// Polls `fut` once.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

pub(super) fn short_time() -> Duration {
    Duration::from_micros(random(400))
}

/// A read's outcome: its bytes are those its own descriptor's peer sent, and an error is
/// one the kernel posts.
fn check_read(
    fd: i32,
    len: usize,
    out: crate::driver::op::Outcome<ops::Read<SimBuf>>,
    cancelled: bool,
) {
    match out.result {
        Ok(n) => {
            let n = n as usize;
            assert!(n <= len, "a read of {len} bytes returned {n}");
            let mut buf = out.data.buf;
            // SAFETY: the kernel reported `n` bytes written.
            unsafe { buf.set_init(n) };
            let want: Vec<u8> = (0..n as u64).map(|i| sim::stream_byte(fd, i)).collect();
            assert_eq!(
                buf.bytes(),
                &want[..],
                "read on fd {fd} got another op's bytes"
            );
        }
        Err(e) => {
            let errno = e.raw_os_error();
            let ok =
                errno == Some(libc::ECONNRESET) || (cancelled && errno == Some(libc::ECANCELED));
            assert!(ok, "read on fd {fd}: unexpected error {e}");
        }
    }
}

pub(super) async fn read_action() {
    let fd = next_fd();
    let len = 1 + random(64) as usize;
    let mut op = Op::new(ops::Read {
        fd,
        buf: SimBuf::new(len),
        offset: u64::MAX,
    });
    match random(4) {
        0 => check_read(fd, len, op.await, false),
        1 => {
            if let Some(out) = poll_then_drop(op, random(3)).await {
                check_read(fd, len, out, false);
            }
        }
        2 => {
            if let Poll::Ready(out) = poll_once(&mut op).await {
                return check_read(fd, len, out, false);
            }
            op.cancel().expect("cancel queued");
            check_read(fd, len, op.await, true);
        }
        _ => {
            if let Ok(out) = crate::time::timeout(short_time(), op).await {
                check_read(fd, len, out, false);
            }
        }
    }
}

pub(super) async fn nop_action() {
    let op = Op::new(ops::Nop);
    if random(2) == 0 {
        let out = op.await;
        assert!(out.result.is_ok(), "a NOP failed: {:?}", out.result.err());
    } else {
        let _ = poll_then_drop(op, random(3)).await;
    }
}

/// Receives on a stream whose peer sends `sim::stream_byte`s: every chunk must start where
/// the last one ended, whatever receive futures were dropped on the way.
pub(super) async fn stream_action() {
    let fd = real_fd();
    sim::new_stream(fd);
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let stream = TcpStream::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    serve(stream, fd).await;
}

/// A real descriptor, so that a close outside the ring (an object dropped where no loop
/// runs) closes something; the simulated kernel plays its peer.
fn real_fd() -> i32 {
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    fd
}

/// Accepts a few connections on a listener, with accepts awaited, dropped mid-way or timed
/// out, serves each, and drops the listener, maybe with connections taken ahead.
pub(super) async fn listener_action() {
    // SAFETY: a new descriptor owned by nothing else.
    let listener = TcpListener::from_fd(unsafe { OwnedFd::from_raw_fd(real_fd()) });
    for _ in 0..1 + random(4) {
        let got = match random(4) {
            0 => poll_then_drop(listener.accept_stream(), random(3)).await,
            1 => crate::time::timeout(short_time(), listener.accept_stream())
                .await
                .ok(),
            _ => Some(listener.accept_stream().await),
        };
        match got {
            None => {}
            Some(Ok(stream)) => {
                let fd = stream.as_raw_fd();
                if random(2) == 0 {
                    serve(stream, fd).await;
                } else {
                    crate::spawn(serve(stream, fd));
                }
            }
            Some(Err(e)) => assert_eq!(
                e.raw_os_error(),
                Some(libc::ECONNABORTED),
                "accept failed with {e}, not the kernel's ECONNABORTED"
            ),
        }
    }
}

/// Receives and writes on `stream` (descriptor `fd`) a few times.
async fn serve(mut stream: TcpStream, fd: i32) {
    let _alive = super::sim_buf::Alive::new();
    let mut offset = 0u64;
    let mut held = Vec::new();
    let mut writer = Writer::new(fd);
    for _ in 0..1 + random(10) {
        if random(3) == 0 {
            writer.step(&mut stream).await;
            continue;
        }
        #[cfg(feature = "tokio-io")]
        if random(4) == 0 {
            match super::traits::read(&mut stream, fd).await {
                super::traits::Read::Nothing => {}
                super::traits::Read::Bytes(bytes) => {
                    check_chunk(fd, offset, &bytes);
                    offset += bytes.len() as u64;
                }
                super::traits::Read::End => break,
            }
            continue;
        }
        let got = match random(5) {
            0 => poll_then_drop(stream.recv(), random(3)).await,
            1 => crate::time::timeout(short_time(), stream.recv()).await.ok(),
            _ => Some(stream.recv().await),
        };
        match got {
            None => {}
            Some(Ok(buf)) if buf.is_empty() => break,
            Some(Ok(buf)) => {
                check_chunk(fd, offset, &buf);
                offset += buf.len() as u64;
                if random(2) == 0 {
                    held.push(buf);
                }
            }
            Some(Err(e)) => {
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::ECONNRESET),
                    "stream on fd {fd}: {e}"
                );
                break;
            }
        }
        if held.len() > random(6) as usize {
            held.remove(0);
        }
        if random(8) == 0 {
            crate::yield_now().await;
        }
    }
    if random(2) == 0 {
        drop(held);
        drop(stream);
    } else {
        drop(stream);
        crate::yield_now().await;
        drop(held);
    }
}

/// A chunk received on `fd` continues its peer's bytes exactly at `offset`.
fn check_chunk(fd: i32, offset: u64, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        assert_eq!(
            b,
            sim::stream_byte(fd, offset + i as u64),
            "stream on fd {fd}: byte {} out of order",
            offset + i as u64
        );
    }
}

/// The write side of a stream action. Its output is checked byte for byte by the simulated
/// kernel while every write it makes is seen to its end; a write dropped mid-way (which may
/// have sent part of its buffer) ends the check.
pub(super) struct Writer {
    pub(super) fd: i32,
    /// Bytes handed to the stream so far, in order.
    pub(super) offset: u64,
    checked: bool,
    /// A write failed: the stream's write side is done.
    broken: bool,
}

impl Writer {
    fn new(fd: i32) -> Writer {
        sim::check_output(fd);
        Writer {
            fd,
            offset: 0,
            checked: true,
            broken: false,
        }
    }

    pub(super) fn failed(&mut self, e: std::io::Error) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "fd {}: a write failed with {e}, not the kernel's EPIPE",
            self.fd
        );
        self.broken = true;
    }

    async fn step(&mut self, stream: &mut TcpStream) {
        if self.broken {
            return;
        }
        #[cfg(feature = "tokio-io")]
        if random(4) == 0 {
            return super::traits::write(self, stream).await;
        }
        let len = 1 + random(160) as usize;
        let buf = SimBuf::output(self.fd, self.offset, len);
        match random(5) {
            0 => match stream.write_queued(buf).await {
                Ok(()) => self.offset += len as u64,
                Err(e) => self.failed(e),
            },
            1 => match stream.write_all(buf).await.0 {
                Ok(()) => self.offset += len as u64,
                Err(e) => self.failed(e),
            },
            2 => match stream.write(buf).await.0 {
                Ok(n) => {
                    assert!(n <= len, "fd {}: a write of {len} took {n}", self.fd);
                    self.offset += n as u64;
                }
                Err(e) => self.failed(e),
            },
            3 => {
                // Dropped mid-way: what it sent is unknown, so the order is no longer checked.
                let done = poll_then_drop(stream.write_all(buf), random(3)).await;
                match done.map(|(r, _)| r) {
                    Some(Ok(())) => self.offset += len as u64,
                    Some(Err(e)) => self.failed(e),
                    None => self.unchecked(),
                }
            }
            _ => match crate::time::timeout(short_time(), stream.write(buf)).await {
                Ok((Ok(n), _)) => self.offset += n as u64,
                Ok((Err(e), _)) => self.failed(e),
                Err(_) => self.unchecked(),
            },
        }
    }

    pub(super) fn unchecked(&mut self) {
        if self.checked {
            sim::stop_output_check(self.fd);
            self.checked = false;
        }
    }
}
