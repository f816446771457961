//! `recv()` into loop-owned buffers from the provided-buffer ring.

use std::future::Future;
use std::net::Shutdown;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

mod common;
use common::{std_pair, tcp_pair};

use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, time, EventLoop, RecvBuf};

/// The three receive paths: multishot (default here), single-shot with buffer select, and
/// no buffer ring at all.
fn each_path() -> [ringloop::Builder; 3] {
    [
        EventLoop::builder(),
        EventLoop::builder().multishot(false),
        EventLoop::builder().recv_buffer_ring(false),
    ]
}

#[test]
fn recv_uses_the_buffer_ring_and_multishot_on_this_kernel() {
    let lp = EventLoop::new().unwrap();
    assert!(lp.features().recv_buffer_ring());
    assert!(lp.features().multishot_recv());
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(1024));
    let lp = EventLoop::builder().multishot(false).build().unwrap();
    assert!(!lp.features().multishot_recv());
}

#[test]
fn zero_copy_echo_and_eof_as_empty_recvbuf() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let server = spawn(async move {
            loop {
                let buf: RecvBuf = s.recv().await.unwrap();
                if buf.is_empty() {
                    return;
                }
                // The received buffer goes straight back out: no copy.
                let (r, _) = s.write_all(buf).await;
                r.unwrap();
            }
        });
        let (r, _) = c.write_all(b"zero copy").await;
        r.unwrap();
        let got = c.recv().await.unwrap();
        assert_eq!(&got[..], b"zero copy");
        drop(got);
        c.shutdown(Shutdown::Write).await.unwrap();
        server.await.unwrap();
        assert!(c.recv().await.unwrap().is_empty(), "EOF");
    });
    assert_eq!(
        lp.stats().recv_pool.map(|p| p.free),
        Some(1024),
        "every buffer came back"
    );
}

#[test]
fn recv_is_cancel_safe_across_a_timeout() {
    for b in each_path() {
        cancel_safe_across_timeout(b.build().unwrap());
    }
}

fn cancel_safe_across_timeout(mut lp: EventLoop) {
    lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let r = time::timeout(Duration::from_millis(10), s.recv()).await;
        assert!(r.is_err(), "nothing sent yet");
        let (r, _) = c.write_all(b"hello").await;
        r.unwrap();
        let got = time::timeout(Duration::from_secs(5), s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"hello");
    });
}

#[test]
fn recv_completed_then_dropped_before_repoll_loses_nothing() {
    for b in each_path() {
        completed_then_dropped(b.build().unwrap());
    }
}

fn completed_then_dropped(mut lp: EventLoop) {
    lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let mut fut = Box::pin(s.recv());
        std::future::poll_fn(|cx| {
            assert!(fut.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        let (r, _) = c.write_all(b"kept").await;
        r.unwrap();
        time::sleep(Duration::from_millis(20)).await; // the CQE is reaped meanwhile
        drop(fut);
        let got = time::timeout(Duration::from_secs(5), s.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..], b"kept");
    });
}

#[test]
fn tiny_pool_with_eight_streams_of_one_mib_loses_nothing() {
    for multishot in [true, false] {
        tiny_pool(EventLoop::builder().multishot(multishot));
    }
}

fn tiny_pool(b: ringloop::Builder) {
    const LEN: usize = 1 << 20;
    let mut lp = b.recv_buffers(2, 64).build().unwrap();
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut receivers = Vec::new();
        for i in 0..8u8 {
            let sender = spawn(async move {
                let c = TcpStream::connect(addr).await.unwrap();
                let data: Vec<u8> = (0..LEN).map(|k| (k as u8).wrapping_mul(7) ^ i).collect();
                let (r, _) = c.write_all(data).await;
                r.unwrap();
                c.shutdown(Shutdown::Write).await.unwrap();
            });
            let (s, _) = l.accept().await.unwrap();
            receivers.push(spawn(async move {
                let mut got = Vec::with_capacity(LEN);
                loop {
                    let b = s.recv().await.unwrap();
                    if b.is_empty() {
                        break;
                    }
                    got.extend_from_slice(&b);
                    // Hold the buffer across a yield so the pool really runs dry.
                    ringloop::yield_now().await;
                }
                sender.await.unwrap();
                (i, got)
            }));
        }
        for r in receivers {
            let (i, got) = r.await.unwrap();
            assert_eq!(got.len(), LEN, "stream {i}");
            assert!(
                got.iter()
                    .enumerate()
                    .all(|(k, &b)| b == (k as u8).wrapping_mul(7) ^ i),
                "stream {i} bytes differ"
            );
        }
    });
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(2));
    // Eight streams on two buffers held across yields: receives found the ring empty, and
    // each such found its way back (the bytes above are all there).
    let (window, starved) = lp
        .stats()
        .recv_pool
        .map(|p| (p.window, p.ring_empty))
        .unwrap();
    assert!(starved > 0, "no receive ever found the ring empty");
    assert_eq!(window, 2, "the window is the whole of a pool this small");
}

#[test]
fn a_busy_connection_reuses_a_few_hot_buffers_not_the_whole_pool() {
    // The ring offers the kernel a small window of the pool, refilled with the buffers
    // returned last. Were the whole pool in the ring, each receive would take the buffer
    // used longest ago, and 400 receives would land in 400 different buffers.
    let mut lp = EventLoop::new().unwrap();
    let (window, _) = lp
        .stats()
        .recv_pool
        .map(|p| (p.window, p.ring_empty))
        .unwrap();
    let seen = lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u32 {
            let (r, _) = c.write_all(i.to_le_bytes().to_vec()).await;
            r.unwrap();
            let got = s.recv().await.unwrap();
            assert_eq!(&got[..], &i.to_le_bytes());
            seen.insert(got.as_ptr() as usize);
            // Echoed back from the same buffer, which the client receives into one of its own.
            let (r, _) = s.write_all(got).await;
            r.unwrap();
            let back = c.recv().await.unwrap();
            assert_eq!(&back[..], &i.to_le_bytes());
            seen.insert(back.as_ptr() as usize);
        }
        seen
    });
    // The window starts small (16 today); 64 leaves room to change that, not to cycle.
    assert!(
        window <= 64,
        "the ring starts with {window} of 1024 buffers"
    );
    assert!(
        seen.len() <= 2 * window,
        "400 receives used {} buffers (window {window})",
        seen.len()
    );
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(1024));
}

#[test]
fn buffers_held_by_the_application_beyond_the_window_are_replaced_from_the_pool() {
    // The reader keeps every buffer: the ring's window empties, and its refills must come
    // from the rest of the pool, not from buffers coming back.
    const LEN: usize = 64 * 300;
    let mut lp = EventLoop::builder().recv_buffers(1024, 64).build().unwrap();
    let (window, _) = lp
        .stats()
        .recv_pool
        .map(|p| (p.window, p.ring_empty))
        .unwrap();
    let held = lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let data: Vec<u8> = (0..LEN).map(|k| (k % 251) as u8).collect();
        let sender = spawn(async move {
            let (r, _) = c.write_all(data).await;
            r.unwrap();
            c
        });
        let mut held = Vec::new();
        let mut got = 0;
        while got < LEN {
            // Bounded: a pool that failed to refill the ring would retry ENOBUFS forever.
            let b = time::timeout(Duration::from_secs(10), s.recv())
                .await
                .expect("recv stalled with the window empty")
                .unwrap();
            assert!(
                b.iter()
                    .enumerate()
                    .all(|(k, &x)| x == ((got + k) % 251) as u8),
                "bytes out of order at {got}"
            );
            got += b.len();
            held.push(b);
        }
        drop(sender.await.unwrap());
        held
    });
    assert!(held.len() >= LEN / 64, "{} receives", held.len());
    assert!(held.len() > 2 * window, "the test must outgrow the window");
    assert_eq!(
        lp.stats().recv_pool.map(|p| p.free),
        Some(1024 - held.len())
    );
    drop(held);
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(1024));
}

#[test]
fn a_burst_wider_than_the_window_grows_it_and_loses_nothing() {
    const CONNS: usize = 64;
    const LEN: usize = 4096;
    let mut lp = EventLoop::builder()
        .recv_buffers(1024, LEN)
        .build()
        .unwrap();
    let (start, _) = lp
        .stats()
        .recv_pool
        .map(|p| (p.window, p.ring_empty))
        .unwrap();
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut pairs = Vec::new();
        for _ in 0..CONNS {
            let c = spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let (s, _) = l.accept().await.unwrap();
            pairs.push((Rc::new(c.await.unwrap()), Rc::new(s)));
        }
        for round in 0..4u8 {
            // Every server side waits in recv() first, then every client sends at once.
            let mut receivers = Vec::new();
            for (i, (_, s)) in pairs.iter().enumerate() {
                let s = s.clone();
                receivers.push(spawn(async move {
                    let mut got = Vec::new();
                    while got.len() < LEN {
                        got.extend_from_slice(&s.recv().await.unwrap());
                    }
                    (i, got)
                }));
            }
            ringloop::yield_now().await;
            let senders: Vec<_> = pairs
                .iter()
                .enumerate()
                .map(|(i, (c, _))| {
                    let c = Rc::clone(c);
                    spawn(async move { c.write_all(vec![i as u8 ^ round; LEN]).await.0 })
                })
                .collect();
            for s in senders {
                s.await.unwrap().unwrap();
            }
            for r in receivers {
                let (i, got) = r.await.unwrap();
                assert!(got.iter().all(|&b| b == i as u8 ^ round), "stream {i}");
            }
        }
    });
    let (grown, _) = lp
        .stats()
        .recv_pool
        .map(|p| (p.window, p.ring_empty))
        .unwrap();
    assert!(
        grown > start,
        "{CONNS} receives at once left the window at {grown}"
    );
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(1024));
}

#[test]
fn idle_connections_hold_no_recv_buffer() {
    let mut lp = EventLoop::builder()
        .recv_buffers(256, 4096)
        .build()
        .unwrap();
    let conns = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut conns = Vec::new();
        for _ in 0..1000 {
            let c = spawn(async move { TcpStream::connect(addr).await.unwrap() });
            let (s, _) = l.accept().await.unwrap();
            let s = Rc::new(s);
            let s2 = s.clone();
            // Every server side waits in recv(): 1,000 receives pending, none with data.
            spawn(async move {
                let _ = s2.recv().await;
            });
            conns.push((c.await.unwrap(), s));
        }
        time::sleep(Duration::from_millis(20)).await;
        conns
    });
    assert_eq!(
        lp.stats().recv_pool.map(|p| p.free),
        Some(256),
        "1,000 pending receives hold no buffer"
    );
    drop(conns);
}

#[test]
fn recvbuf_dropped_on_another_thread_goes_back_to_the_pool() {
    let mut lp = EventLoop::builder().recv_buffers(4, 1024).build().unwrap();
    let buf = lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let (r, _) = c.write_all(b"travel").await;
        r.unwrap();
        s.recv().await.unwrap()
    });
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(3));
    std::thread::spawn(move || {
        assert_eq!(&buf[..], b"travel");
        drop(buf);
    })
    .join()
    .unwrap();
    // The loop writes it back on its next turn.
    lp.block_on(ringloop::yield_now());
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(4));
}

#[test]
fn recvbuf_outliving_its_loop_is_still_readable() {
    let mut lp = EventLoop::new().unwrap();
    let buf = lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let (r, _) = c.write_all(b"afterlife").await;
        r.unwrap();
        s.recv().await.unwrap()
    });
    lp.close().unwrap();
    assert_eq!(&buf[..], b"afterlife");
    drop(buf);
}

#[test]
fn without_a_buffer_ring_recv_falls_back_with_the_same_guarantees() {
    let mut lp = EventLoop::builder()
        .recv_buffer_ring(false)
        .recv_buffers(8, 256)
        .build()
        .unwrap();
    assert!(!lp.features().recv_buffer_ring());
    assert_eq!(lp.stats().recv_pool.map(|p| p.free), None);
    lp.block_on(async {
        let (c, s) = tcp_pair().await;
        // Cancel-safe across a timeout.
        assert!(time::timeout(Duration::from_millis(10), s.recv())
            .await
            .is_err());
        let (r, _) = c.write_all(b"fallback").await;
        r.unwrap();
        let got = s.recv().await.unwrap();
        assert_eq!(&got[..], b"fallback");
        // Echo it back as an IoBuf, then EOF as an empty RecvBuf.
        let (r, _) = s.write_all(got).await;
        r.unwrap();
        let back = c.recv().await.unwrap();
        assert_eq!(&back[..], b"fallback");
        c.shutdown(Shutdown::Write).await.unwrap();
        assert!(s.recv().await.unwrap().is_empty());
    });
}

#[test]
fn close_that_times_out_with_a_receive_in_flight_leaks_the_pool() {
    // The receive never completes (no data), and a zero close timeout abandons it: the pool
    // it may still write into must not be freed. Freeing it would be a use-after-free that
    // only a sanitizer sees; this checks the close reports the abandonment.
    let mut lp = EventLoop::builder()
        .close_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let (_c, s) = lp.block_on(tcp_pair());
    let s = Rc::new(s);
    let s2 = s.clone();
    lp.spawn(async move {
        let _ = s2.recv().await;
    });
    lp.block_on(ringloop::yield_now());
    let e = lp.close().unwrap_err();
    assert!(e.to_string().contains("leaked"), "{e}");
}

#[test]
fn recv_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let f = async move {
            let b = s.recv().await.unwrap();
            let (r, _) = s.write_all(b).await;
            r.unwrap();
        };
        assert_send(&f);
        drop(c);
        f.await;
    });
}

#[test]
fn dropping_a_stream_with_an_armed_multishot_receive_frees_everything() {
    let mut lp = EventLoop::builder().recv_buffers(4, 64).build().unwrap();
    lp.block_on(async {
        let (c, s) = tcp_pair().await;
        let (r, _) = c.write_all(b"first").await;
        r.unwrap();
        assert_eq!(&s.recv().await.unwrap()[..], b"first");
        // More data lands in the armed receive's queue; nobody takes it.
        let (r, _) = c.write_all(b"queued").await;
        r.unwrap();
        time::sleep(Duration::from_millis(20)).await;
        drop(s);
        time::sleep(Duration::from_millis(20)).await;
        // The peer sees the close.
        let b = c.recv().await;
        assert!(b.map(|b| b.is_empty()).unwrap_or(true));
    });
    assert_eq!(
        lp.stats().recv_pool.map(|p| p.free),
        Some(4),
        "queued buffers went back"
    );
    assert_eq!(
        lp.stats().ops_in_kernel,
        1,
        "only the doorbell read remains"
    );
}

#[test]
fn a_stream_handed_to_another_task_wakes_that_task() {
    // Task A receives once and is woken by it; then it hands the stream to task B and ends.
    // The stream's slot still holds A's waker (it stays across wakes): B's receive must
    // replace it and be woken itself, on every receive path.
    for b in each_path() {
        let mut lp = b.build().unwrap();
        lp.block_on(async {
            let (c, s) = tcp_pair().await;
            let (tx, rx) = std::sync::mpsc::channel();
            let a = spawn(async move {
                assert_eq!(&s.recv().await.unwrap()[..], b"one");
                tx.send(s).unwrap();
            });
            let (r, _) = c.write_all(b"one").await;
            r.unwrap();
            a.await.unwrap();
            let s = rx.recv().unwrap();
            let b = spawn(async move { s.recv().await.unwrap().to_vec() });
            // B polls first and waits; only then does the next chunk come.
            for _ in 0..3 {
                ringloop::yield_now().await;
            }
            let (r, _) = c.write_all(b"two").await;
            r.unwrap();
            let got = time::timeout(Duration::from_secs(5), b)
                .await
                .expect("the second task was never woken")
                .unwrap();
            assert_eq!(got, b"two");
        });
    }
}

/// Every single-shot receive path (buffer select, heap buffer) in every ring mode: the paths
/// where a dropped `recv()` leaves a RECV in the kernel.
fn single_shot_paths() -> Vec<(String, ringloop::Builder)> {
    use ringloop::SetupMode::{Basic, CoopTaskrun, DeferTaskrun};
    let mut out = Vec::new();
    for mode in [DeferTaskrun, CoopTaskrun, Basic] {
        out.push((
            format!("{mode:?}, buffer select"),
            EventLoop::builder().setup_mode(mode).multishot(false),
        ));
        out.push((
            format!("{mode:?}, heap buffer"),
            EventLoop::builder()
                .setup_mode(mode)
                .recv_buffer_ring(false),
        ));
    }
    out
}

/// Polls `fut` once, so that its op is queued (not yet submitted: no enter has run).
async fn poll_once<F: Future + Unpin>(fut: &mut F) {
    std::future::poll_fn(|cx| {
        assert!(std::pin::Pin::new(&mut *fut).poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
}

/// Receives until `want` bytes have come.
async fn recv_exactly(s: &TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let b = time::timeout(Duration::from_secs(5), s.recv())
            .await
            .expect("bytes were sent")
            .unwrap();
        assert!(!b.is_empty(), "early EOF");
        got.extend_from_slice(&b);
    }
    got
}

#[test]
fn a_dropped_receive_and_the_next_in_one_enter_keep_the_byte_order() {
    // 4 KiB waiting in the socket, 2 KiB buffers: a dropped RECV and the next one, submitted
    // together, would each take 2 KiB, and the dropped one's bytes came out second.
    for (name, b) in single_shot_paths() {
        let mut lp = b.recv_buffers(8, 2048).build().unwrap();
        lp.block_on(async {
            let (mut c, s) = std_pair().await;
            let data: Vec<u8> = (0..4096u32).map(|i| (i / 2048) as u8 + b'a').collect();
            std::io::Write::write_all(&mut c, &data).unwrap();
            let mut first = Box::pin(s.recv());
            poll_once(&mut first).await;
            drop(first);
            let got = recv_exactly(&s, data.len()).await;
            assert!(got == data, "{name}: bytes out of order");
        });
    }
}

#[test]
fn a_receive_dropped_after_its_completion_and_before_its_reap_keeps_the_byte_order() {
    // The RECV is in the kernel when "A" arrives; the thread then blocks, and the receive
    // completes (on basic and cooperative rings, as task work on the way back from that
    // system call) before the loop has reaped it. Its future is dropped, "B" is sent: the
    // next receives must give "A" then "B".
    for (name, b) in single_shot_paths() {
        let mut lp = b.build().unwrap();
        lp.block_on(async {
            let (mut c, s) = std_pair().await;
            let mut first = Box::pin(s.recv());
            poll_once(&mut first).await;
            time::sleep(Duration::from_millis(1)).await; // an enter submits the RECV
            std::io::Write::write_all(&mut c, b"A").unwrap();
            std::thread::sleep(Duration::from_millis(5));
            drop(first);
            std::io::Write::write_all(&mut c, b"B").unwrap();
            let got = recv_exactly(&s, 2).await;
            assert_eq!(got, b"AB", "{name}: bytes out of order");
        });
    }
}

#[test]
fn two_tasks_receiving_on_one_stream_are_both_served() {
    // Each single-shot path has one receive in flight per stream; the task that takes its
    // result must not leave the other waiting on a receive that is gone.
    for (name, b) in single_shot_paths() {
        let mut lp = b.build().unwrap();
        lp.block_on(async {
            let (mut c, s) = std_pair().await;
            let s = Rc::new(s);
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let s = s.clone();
                    spawn(async move {
                        let b = time::timeout(Duration::from_secs(5), s.recv()).await;
                        b.expect("served").unwrap().len()
                    })
                })
                .collect();
            time::sleep(Duration::from_millis(5)).await; // both wait on the receive
            std::io::Write::write_all(&mut c, b"one").unwrap();
            time::sleep(Duration::from_millis(5)).await;
            std::io::Write::write_all(&mut c, b"two").unwrap();
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            assert_eq!(total, 6, "{name}");
        });
    }
}

#[test]
fn a_stalled_connection_does_not_take_the_whole_pool() {
    // One connection's task takes one chunk and then stops reading while its peer keeps
    // sending, a kilobyte at a time: its multishot receive is cancelled once it has queued
    // an eighth of the pool, rather than take a buffer for every chunk until the pool is
    // gone, and another connection is still served from the pool.
    let mut lp = EventLoop::builder().recv_buffers(64, 1024).build().unwrap();
    let stalled = lp.block_on(async {
        let (mut peer, s) = std_pair().await;
        let task = spawn(async move {
            drop(s.recv().await);
            std::future::pending::<()>().await;
        });
        time::sleep(Duration::from_millis(5)).await;
        peer.set_nonblocking(true).unwrap();
        for _ in 0..48 {
            let _ = std::io::Write::write(&mut peer, &[7u8; 1024]);
            time::sleep(Duration::from_millis(1)).await;
        }
        (peer, task)
    });
    let held = 64 - lp.stats().recv_pool.map(|p| p.free).unwrap();
    assert!(held <= 16, "a stalled stream holds {held} of 64 buffers");
    lp.block_on(async {
        let (mut c, s) = std_pair().await;
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        std::io::Write::write_all(&mut c, &data).unwrap();
        assert!(recv_exactly(&s, data.len()).await == data);
    });
    assert_eq!(
        lp.stats().recv_pool.map(|p| p.heap_fallbacks),
        Some(0),
        "the pool ran dry"
    );
    drop(stalled);
}

#[test]
fn a_receive_waiting_on_a_dry_pool_sleeps_rather_than_spins() {
    // Eight stalled connections hold the whole pool in their queues. Another connection's
    // receive finds the pool empty: it must wait (and, once the pool stays dry, receive into
    // a heap buffer), not re-arm at once against buffers that are not free.
    let mut lp = EventLoop::builder().recv_buffers(16, 1024).build().unwrap();
    lp.block_on(async {
        let mut stalled = Vec::new();
        for _ in 0..8 {
            let (mut peer, s) = std_pair().await;
            let s = Rc::new(s);
            let s2 = s.clone();
            let armed = spawn(async move { drop(s2.recv().await) });
            time::sleep(Duration::from_millis(1)).await; // armed
            armed.abort();
            peer.set_nonblocking(true).unwrap();
            let _ = std::io::Write::write(&mut peer, &vec![7u8; 64 * 1024]);
            stalled.push((peer, s));
        }
        time::sleep(Duration::from_millis(20)).await;

        let (mut c, s) = std_pair().await;
        let s = Rc::new(s);
        let cpu = common::thread_cpu();
        let waiting = spawn({
            let s = s.clone();
            async move { s.recv().await.map(|b| b.to_vec()) }
        });
        time::sleep(Duration::from_millis(200)).await;
        let used = common::thread_cpu() - cpu;
        assert!(
            used < Duration::from_millis(100),
            "the loop spun: {used:?} of CPU"
        );
        std::io::Write::write_all(&mut c, b"late").unwrap();
        let got = time::timeout(Duration::from_secs(5), waiting).await;
        assert_eq!(got.expect("served").unwrap().unwrap(), b"late");
    });
    assert!(
        lp.stats().recv_pool.map(|p| p.heap_fallbacks).unwrap() > 0,
        "the pool never ran dry"
    );
}

#[test]
fn handlers_holding_every_buffer_of_the_pool_still_receive_their_requests() {
    // Four handlers each keep the buffers of a request until all of it has come: 8 KiB in
    // 1 KiB buffers. The first halves take the whole pool of 16; no buffer will come back
    // before a request is complete. Once the pool stays dry, receives go through heap
    // buffers instead of waiting for a buffer that never comes back.
    for multishot in [true, false] {
        let mut lp = EventLoop::builder()
            .multishot(multishot)
            .recv_buffers(16, 1024)
            .build()
            .unwrap();
        lp.block_on(async {
            const REQUEST: usize = 8192;
            let mut peers = Vec::new();
            let mut handlers = Vec::new();
            for i in 0..4u8 {
                let (mut c, s) = std_pair().await;
                std::io::Write::write_all(&mut c, &vec![i; REQUEST / 2]).unwrap();
                peers.push(c);
                handlers.push(spawn(async move {
                    let mut held: Vec<RecvBuf> = Vec::new();
                    let mut got = 0;
                    while got < REQUEST {
                        let b = s.recv().await.unwrap();
                        assert!(!b.is_empty(), "early EOF");
                        got += b.len();
                        held.push(b);
                    }
                    assert!(held.iter().all(|b| b.iter().all(|&x| x == i)));
                    got
                }));
            }
            time::sleep(Duration::from_millis(20)).await; // every handler holds its half
            for (i, c) in peers.iter_mut().enumerate() {
                std::io::Write::write_all(c, &vec![i as u8; REQUEST / 2]).unwrap();
            }
            for h in handlers {
                let got = time::timeout(Duration::from_secs(5), h)
                    .await
                    .expect("a handler waited for a buffer that never came back");
                assert_eq!(got.unwrap(), REQUEST);
            }
        });
        assert_eq!(lp.stats().recv_pool.map(|p| p.free), Some(16));
        assert!(
            lp.stats().recv_pool.map(|p| p.heap_fallbacks).unwrap() > 0,
            "the pool never ran dry"
        );
    }
}
