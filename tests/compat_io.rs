//! The ecosystem's I/O traits on ringloop's streams (features `tokio-io`, `futures-io`):
//! reads that lose nothing when dropped, writes bounded by the write queue, ordering with the
//! native calls, errors, and tokio's and futures' copy helpers through ringloop streams.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::rc::Rc;
use std::time::Duration;

use ringloop::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use ringloop::{spawn, time, EventLoop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{pattern, small_buffers, std_pair};

/// Every receive path: multishot from the pool, one buffer-select receive at a time, and
/// heap buffers (no pool), each with small buffers so that reads cross them.
fn receive_paths() -> Vec<(&'static str, ringloop::Builder)> {
    vec![
        ("multishot", EventLoop::builder().recv_buffers(64, 1024)),
        (
            "buffer select",
            EventLoop::builder().recv_buffers(64, 1024).multishot(false),
        ),
        (
            "heap buffer",
            EventLoop::builder()
                .recv_buffers(64, 1024)
                .recv_buffer_ring(false),
        ),
    ]
}

#[test]
fn read_exact_across_receive_buffers() {
    for (path, builder) in receive_paths() {
        builder.build().unwrap().block_on(async {
            let (mut c, mut s) = std_pair().await;
            let sent = pattern(1, 100_000);
            let data = sent.clone();
            let writer = std::thread::spawn(move || c.write_all(&data).unwrap());
            let mut got = Vec::new();
            // 700-byte reads straddle the 1 KiB receive buffers.
            let mut chunk = [0u8; 700];
            while got.len() + chunk.len() <= sent.len() {
                AsyncReadExt::read_exact(&mut s, &mut chunk).await.unwrap();
                got.extend_from_slice(&chunk);
            }
            let mut tail = vec![0u8; sent.len() - got.len()];
            AsyncReadExt::read_exact(&mut s, &mut tail).await.unwrap();
            got.extend_from_slice(&tail);
            assert!(got == sent, "{path}: bytes differ");
            writer.join().unwrap();
        });
    }
}

#[test]
fn a_read_dropped_in_a_timeout_loses_nothing() {
    for (path, builder) in receive_paths() {
        builder.build().unwrap().block_on(async {
            let (mut c, mut s) = std_pair().await;
            let sent = pattern(2, 40_000);
            let data = sent.clone();
            // Bytes come in bursts with pauses, so that many reads time out, some of them
            // with a receive in flight.
            let writer = std::thread::spawn(move || {
                for part in data.chunks(3_000) {
                    c.write_all(part).unwrap();
                    std::thread::sleep(Duration::from_millis(3));
                }
            });
            let mut got = Vec::new();
            let mut timeouts = 0;
            let mut buf = vec![0u8; 1500];
            while got.len() < sent.len() {
                let read = AsyncReadExt::read(&mut s, &mut buf);
                match time::timeout(Duration::from_micros(700), read).await {
                    Ok(n) => got.extend_from_slice(&buf[..n.unwrap()]),
                    Err(_) => timeouts += 1,
                }
            }
            assert!(
                timeouts > 0,
                "{path}: no read was dropped; the test proves nothing"
            );
            assert!(
                got == sent,
                "{path}: bytes lost or moved across dropped reads"
            );
            writer.join().unwrap();
        });
    }
}

#[test]
fn trait_reads_and_recv_mixed_keep_the_order() {
    for (path, builder) in receive_paths() {
        builder.build().unwrap().block_on(async {
            let (mut c, mut s) = std_pair().await;
            let sent = pattern(3, 60_000);
            let data = sent.clone();
            let writer = std::thread::spawn(move || c.write_all(&data).unwrap());
            let mut got = Vec::new();
            let mut small = [0u8; 100];
            let mut turn = 0;
            while got.len() < sent.len() {
                turn += 1;
                if turn % 2 == 0 {
                    // What the last trait read left of its buffer comes first.
                    let b = s.recv().await.unwrap();
                    assert!(!b.is_empty(), "{path}: early end of stream");
                    got.extend_from_slice(&b);
                } else {
                    let n = AsyncReadExt::read(&mut s, &mut small).await.unwrap();
                    assert!(n > 0, "{path}: early end of stream");
                    got.extend_from_slice(&small[..n]);
                }
            }
            assert!(got == sent, "{path}: recv and trait reads reordered bytes");
            writer.join().unwrap();
        });
    }
}

#[test]
fn a_reader_that_stops_bounds_what_the_writer_holds() {
    const TOTAL: usize = 64 << 20;
    EventLoop::new().unwrap().block_on(async {
        let (c, mut s) = std_pair().await;
        small_buffers(&c, 64 * 1024);
        small_buffers(&s, 64 * 1024);
        let accepted = Rc::new(Cell::new(0usize));
        let counter = accepted.clone();
        let writer = spawn(async move {
            let block = pattern(4, 1 << 20);
            let mut off = 0;
            while off < TOTAL {
                let at = off % block.len();
                let n = AsyncWriteExt::write(&mut s, &block[at..]).await.unwrap();
                off += n;
                counter.set(off);
            }
            AsyncWriteExt::shutdown(&mut s).await.unwrap();
        });
        // The peer reads nothing for a while: the writer must stop, not queue 64 MiB.
        time::sleep(Duration::from_millis(300)).await;
        let held = accepted.get();
        assert!(
            held <= 4 << 20,
            "{held} bytes accepted while the peer read nothing: the queue is not bounded"
        );
        // Now the peer reads it all, and every byte is right.
        let reader = std::thread::spawn(move || {
            let mut c = c;
            let block = pattern(4, 1 << 20);
            let mut got = 0usize;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    return got;
                }
                for (i, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, block[(got + i) % block.len()], "byte {}", got + i);
                }
                got += n;
            }
        });
        // Shut down once flushed: every byte is in the kernel, so joining the reader thread
        // no longer needs the loop.
        writer.await.unwrap();
        assert_eq!(reader.join().unwrap(), TOTAL);
    });
}

#[test]
fn shutdown_flushes_then_the_peer_reads_end_of_stream() {
    EventLoop::new().unwrap().block_on(async {
        let (c, mut s) = std_pair().await;
        let sent = pattern(5, 300_000);
        let reader = std::thread::spawn(move || {
            let mut c = c;
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        });
        // Written in odd pieces, some through the vectored call.
        let (a, b) = sent.split_at(123_457);
        AsyncWriteExt::write_all(&mut s, a).await.unwrap();
        let mut rest = b;
        while !rest.is_empty() {
            let half = rest.len() / 2;
            let bufs = [
                std::io::IoSlice::new(&rest[..half]),
                std::io::IoSlice::new(&rest[half..]),
            ];
            let n = AsyncWriteExt::write_vectored(&mut s, &bufs).await.unwrap();
            rest = &rest[n..];
        }
        AsyncWriteExt::shutdown(&mut s).await.unwrap();
        assert!(reader.join().unwrap() == sent, "the peer read other bytes");
    });
}

#[test]
fn flush_waits_for_trait_writes_and_native_writes_stay_in_order() {
    EventLoop::new().unwrap().block_on(async {
        let (c, mut s) = std_pair().await;
        let reader = std::thread::spawn(move || {
            let mut c = c;
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        });
        AsyncWriteExt::write_all(&mut s, b"one,").await.unwrap();
        let (r, _) = s.write_all(&b"two,"[..]).await;
        r.unwrap();
        AsyncWriteExt::write_all(&mut s, b"three").await.unwrap();
        // The native flush waits for bytes written through the traits too.
        s.flush().await.unwrap();
        s.shutdown(Shutdown::Write).await.unwrap();
        assert_eq!(reader.join().unwrap(), b"one,two,three");
    });
}

/// Resets the connection from the peer's side: SO_LINGER with a zero timeout, then close.
fn reset(c: std::net::TcpStream) {
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(c);
}

#[test]
fn after_the_peer_resets_reads_and_writes_fail() {
    EventLoop::new().unwrap().block_on(async {
        let (c, mut s) = std_pair().await;
        reset(c);
        time::sleep(Duration::from_millis(20)).await;
        let mut buf = [0u8; 16];
        let e = AsyncReadExt::read(&mut s, &mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        // A write is accepted into the queue, then its failure comes back from the next
        // call, and from every write call after it: never lost.
        let mut failed = None;
        for _ in 0..100 {
            match AsyncWriteExt::write(&mut s, b"after the reset").await {
                Ok(_) => {
                    if let Err(e) = AsyncWriteExt::flush(&mut s).await {
                        failed = Some(e);
                        break;
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.expect("writes to a reset connection never failed");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
        let again = AsyncWriteExt::write(&mut s, b"x").await.unwrap_err();
        assert_eq!(again.kind(), e.kind(), "the failure is kept: {again}");
        assert!(AsyncWriteExt::shutdown(&mut s).await.is_err());
    });
}

#[test]
fn copy_bidirectional_through_a_ringloop_proxy() {
    const EACH_WAY: usize = 16 << 20;
    // The backend and the client are plain threads; only the proxy runs on ringloop.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let backend = std::thread::spawn(move || {
        let (conn, _) = backend.accept().unwrap();
        exchange(conn, pattern(6, EACH_WAY), pattern(7, EACH_WAY))
    });
    EventLoop::new().unwrap().block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let conn = std::net::TcpStream::connect(proxy_addr).unwrap();
            exchange(conn, pattern(7, EACH_WAY), pattern(6, EACH_WAY))
        });
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = TcpStream::connect(backend_addr).await.unwrap();
        let (up, down) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound)
            .await
            .unwrap();
        assert_eq!((up, down), (EACH_WAY as u64, EACH_WAY as u64));
        client.join().unwrap();
    });
    backend.join().unwrap();
}

/// Sends `send` on `conn` while reading until end of stream, then checks what came is
/// `expect`; shuts down its write side once sent.
fn exchange(conn: std::net::TcpStream, send: Vec<u8>, expect: Vec<u8>) {
    let mut w = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        w.write_all(&send).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut r = conn;
    let mut got = Vec::with_capacity(expect.len());
    r.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    assert!(
        got == expect,
        "{} bytes came, other than the {} sent",
        got.len(),
        expect.len()
    );
}

#[test]
fn futures_io_copy_echoes_through_a_unix_stream() {
    use futures::io::AsyncReadExt as _;
    let dir = std::env::temp_dir().join(format!("ringloop-compat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("echo.sock");
    EventLoop::new().unwrap().block_on(async {
        let listener = UnixListener::bind(&path).unwrap();
        let server = spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let (mut rd, mut wr) = conn.split();
            let n = futures::io::copy(&mut rd, &mut wr).await.unwrap();
            futures::io::AsyncWriteExt::close(&mut wr).await.unwrap();
            n
        });
        let mut client = UnixStream::connect(&path).await.unwrap();
        let sent = pattern(8, 1 << 20);
        let (mut rd, mut wr) = (&mut client).split();
        let write = async {
            futures::io::AsyncWriteExt::write_all(&mut wr, &sent)
                .await
                .unwrap();
            futures::io::AsyncWriteExt::close(&mut wr).await.unwrap();
        };
        let read = async {
            let mut got = Vec::new();
            futures::io::AsyncReadExt::read_to_end(&mut rd, &mut got)
                .await
                .unwrap();
            got
        };
        let ((), got) = futures::join!(write, read);
        assert!(got == sent, "the echo differs");
        assert_eq!(server.await.unwrap(), sent.len() as u64);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bytes_flushed_through_the_traits_reach_the_peer_when_the_loop_closes_at_once() {
    let (c, addr) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    };
    let sent = pattern(9, 32 * 1024);
    let expect = sent.clone();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = c.accept().unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    });
    {
        let mut lp = EventLoop::new().unwrap();
        lp.block_on(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // Two writes, so that the second is tried at submit, then a flush: ready once
            // the bytes are in the send in flight, before its completion.
            AsyncWriteExt::write_all(&mut s, &sent[..100])
                .await
                .unwrap();
            s.flush().await.unwrap();
            AsyncWriteExt::write_all(&mut s, &sent[100..])
                .await
                .unwrap();
            AsyncWriteExt::flush(&mut s).await.unwrap();
        });
        // The loop closes here, the stream dropped with the future.
    }
    assert!(
        reader.join().unwrap() == expect,
        "the peer missed flushed bytes"
    );
}
