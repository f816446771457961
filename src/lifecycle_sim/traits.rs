//! Reads and writes through tokio's I/O traits (feature `tokio-io`), mixed with the native
//! calls on the same stream: the compat layer's reads must be cancel-safe, and its writes
//! must keep their place among queued ones.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::actions::{poll_then_drop, short_time, Writer};
use super::random;
use crate::net::TcpStream;
use crate::sys::sim;

/// What a trait read brought: nothing (dropped or timed out), bytes, or the end.
pub(super) enum Read {
    Nothing,
    Bytes(Vec<u8>),
    End,
}

/// One `AsyncReadExt::read` of up to 100 bytes, awaited, dropped after a few polls or timed
/// out. An error is the kernel's reset, which ends the stream like the end of it.
pub(super) async fn read(stream: &mut TcpStream, fd: i32) -> Read {
    let mut buf = vec![0u8; 1 + random(100) as usize];
    let got = match random(3) {
        0 => poll_then_drop(stream.read(&mut buf), random(3)).await,
        1 => crate::time::timeout(short_time(), stream.read(&mut buf))
            .await
            .ok(),
        _ => Some(stream.read(&mut buf).await),
    };
    match got {
        None => Read::Nothing,
        Some(Ok(0)) => Read::End,
        Some(Ok(n)) => {
            buf.truncate(n);
            Read::Bytes(buf)
        }
        Some(Err(e)) => {
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ECONNRESET),
                "trait read on fd {fd}: {e}"
            );
            Read::End
        }
    }
}

/// One trait write of what `w` sends next: `write`, `write_all` awaited, or `write_all`
/// dropped after a few polls (which ends the order check: what it took is unknown).
pub(super) async fn write(w: &mut Writer, stream: &mut TcpStream) {
    let len = 1 + random(160) as usize;
    let bytes: Vec<u8> = (0..len as u64)
        .map(|i| sim::output_byte(w.fd, w.offset + i))
        .collect();
    match random(3) {
        0 => match stream.write(&bytes).await {
            Ok(n) => {
                assert!(n <= len, "fd {}: a trait write of {len} took {n}", w.fd);
                w.offset += n as u64;
            }
            Err(e) => w.failed(e),
        },
        1 => match stream.write_all(&bytes).await {
            Ok(()) => w.offset += len as u64,
            Err(e) => w.failed(e),
        },
        _ => match poll_then_drop(stream.write_all(&bytes), random(3)).await {
            Some(Ok(())) => w.offset += len as u64,
            Some(Err(e)) => w.failed(e),
            None => w.unchecked(),
        },
    }
}
