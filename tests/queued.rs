//! `write_queued` and `flush`: writes that resolve once the loop holds their buffer.

use std::future::Future;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ringloop::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use ringloop::{spawn, time, EventLoop, Handle};

mod common;
use common::{small_buffers, tcp_pair, Counted};

/// Reads until end of stream with `read` (a stream's `read`, TCP or Unix).
async fn read_to_end<F, R>(mut read: F) -> Vec<u8>
where
    F: FnMut(Vec<u8>) -> R,
    R: Future<Output = ringloop::BufResult<usize, Vec<u8>>>,
{
    let mut got = Vec::new();
    loop {
        let (r, b) = read(Vec::with_capacity(64 * 1024)).await;
        if r.unwrap() == 0 {
            return got;
        }
        got.extend_from_slice(&b);
    }
}

/// The `i`th write of a test: its length varies from 1 byte to 20 000, its bytes are its own.
fn chunk(i: usize) -> Vec<u8> {
    let len = 1 + (i * 7919) % 20_000;
    (0..len).map(|j| (i * 31 + j) as u8).collect()
}

/// A connected Unix stream pair: (client, server side); `tag` names the socket's directory.
async fn unix_pair(tag: &str) -> (UnixStream, UnixStream) {
    let dir = std::env::temp_dir().join(format!("ringloop-queued-{tag}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("q.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let c = UnixStream::connect(&path).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    // Connected, the pair needs the path no more: leave nothing behind in the temp dir.
    let _ = std::fs::remove_dir_all(&dir);
    (c, s)
}

/// Polls `f` once: whether it resolved at once.
async fn resolves_at_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

#[test]
fn queued_writes_arrive_in_order_with_awaited_writes_and_the_fin_after_them() {
    // 4 KiB socket buffers: nearly every send is short and is resumed by the queue, and the
    // writer outruns the reader, so the backlog bound is reached too.
    let received = EventLoop::new().unwrap().block_on(async {
        let (s, peer) = unix_pair("order").await;
        small_buffers(&s, 4096);
        small_buffers(&peer, 4096);
        let reader = spawn(async move { read_to_end(|b| peer.read(b)).await });
        for i in 0..400 {
            match i % 50 {
                // Awaited writes in between must go after everything queued before them.
                10 => {
                    let (r, _) = s.write_all(chunk(i)).await;
                    r.unwrap();
                }
                // Buffer types other than Vec: a String, and one too large to be kept inline.
                20 => s
                    .write_queued(String::from_utf8_lossy(&chunk(i)).into_owned())
                    .await
                    .unwrap(),
                30 => s
                    .write_queued(Counted::<8>::new(chunk(i), &Arc::default()))
                    .await
                    .unwrap(),
                _ => s.write_queued(chunk(i)).await.unwrap(),
            }
        }
        s.shutdown(Shutdown::Write).await.unwrap();
        reader.await.unwrap()
    });
    // The String write is compared as sent (lossy UTF-8 changes the bytes).
    let mut sent = Vec::new();
    for i in 0..400 {
        if i % 50 == 20 {
            sent.extend_from_slice(String::from_utf8_lossy(&chunk(i)).as_bytes());
        } else {
            sent.extend_from_slice(&chunk(i));
        }
    }
    assert_eq!(received.len(), sent.len(), "no byte lost or repeated");
    assert!(
        received == sent,
        "bytes arrive in the order they were queued"
    );
}

#[test]
fn write_queued_waits_while_the_peer_does_not_read_and_resumes_when_it_does() {
    const CHUNK: usize = 64 * 1024;
    EventLoop::new().unwrap().block_on(async {
        let (c, s) = tcp_pair().await;
        small_buffers(&c, 64 * 1024);
        small_buffers(&s, 64 * 1024);
        let c = Rc::new(c);
        let accepted = Rc::new(AtomicUsize::new(0));
        let (w, n) = (c.clone(), accepted.clone());
        let writer = spawn(async move {
            for i in 0..64 {
                w.write_queued(vec![i as u8; CHUNK]).await.unwrap();
                n.fetch_add(CHUNK, Ordering::SeqCst);
            }
            w.flush().await.unwrap();
            w.shutdown(Shutdown::Write).await.unwrap();
        });
        time::sleep(Duration::from_millis(200)).await;
        let held = accepted.load(Ordering::SeqCst);
        // The kernel holds a few hundred KiB at most with these buffers; the queue 256 KiB
        // plus the write that crossed the bound. 4 MiB were offered.
        assert!(
            held < 2 << 20,
            "{held} bytes taken with the peer not reading"
        );
        assert!(!writer.is_finished(), "the writer waits for room");
        let got = read_to_end(|b| s.read(b)).await;
        writer.await.unwrap();
        assert_eq!(got.len(), 64 * CHUNK);
        assert!(got
            .chunks(CHUNK)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    });
}

/// A queued write that the socket takes only in parts (a slow reader, a small send buffer)
/// costs the loop two completions, not one per part: the first write's try, which comes back
/// short, then one send of the rest, which the kernel finishes as room frees up (Linux
/// 5.19+).
#[test]
fn a_queued_write_to_a_slow_reader_costs_two_completions() {
    let Some((reaped, parts)) = common::completions_for_a_slow_reader(4 << 20, |s, data| async {
        s.write_queued(data).await.unwrap();
        s.flush().await.unwrap();
        s
    }) else {
        eprintln!("skipped: this kernel posts a completion per part of a send");
        return;
    };
    assert!(
        reaped <= 2,
        "{reaped} completions for a write the socket took in about {parts} parts"
    );
}

#[test]
fn a_dropped_stream_still_sends_its_queued_writes_then_closes() {
    const WRITES: usize = 16;
    let received = EventLoop::new().unwrap().block_on(async {
        let (s, peer) = unix_pair("drop").await;
        small_buffers(&s, 4096);
        small_buffers(&peer, 4096);
        // Under the queue's 256 KiB bound, so no write waits for a reader that has not started.
        assert!((0..WRITES).map(|i| chunk(i).len()).sum::<usize>() < 200_000);
        for i in 0..WRITES {
            s.write_queued(chunk(i)).await.unwrap();
        }
        // Nearly all of it is still queued: the kernel's 4 KiB buffers hold a few KiB.
        drop(s);
        read_to_end(|b| peer.read(b)).await
    });
    let sent: Vec<u8> = (0..WRITES).flat_map(chunk).collect();
    assert_eq!(received.len(), sent.len());
    assert!(
        received == sent,
        "every queued byte, in order, then end of stream"
    );
}

#[test]
fn a_reset_peer_fails_the_queue_and_every_later_write() {
    EventLoop::new().unwrap().block_on(async {
        let (c, s) = tcp_pair().await;
        // SO_LINGER 0: closing sends a reset rather than a FIN.
        // SAFETY: the socket is alive for this call.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.as_raw_fd()) };
        socket2::SockRef::from(&fd)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        time::sleep(Duration::from_millis(20)).await;
        let mut failure = None;
        for _ in 0..100 {
            if let Err(e) = c.write_queued(vec![7u8; 1024]).await {
                failure = Some(e);
                break;
            }
            if let Err(e) = c.flush().await {
                failure = Some(e);
                break;
            }
        }
        let e = failure.expect("writes to a reset peer fail");
        let kind = e.kind();
        assert!(
            matches!(
                kind,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
        // Kept: every later call on the write side reports it.
        assert_eq!(c.write_queued(vec![1u8]).await.unwrap_err().kind(), kind);
        assert_eq!(c.flush().await.unwrap_err().kind(), kind);
        let (r, buf) = c.write_all(vec![2u8; 3]).await;
        assert_eq!(r.unwrap_err().kind(), kind);
        assert_eq!(buf, [2, 2, 2], "an awaited write gives its buffer back");
        assert_eq!(c.shutdown(Shutdown::Write).await.unwrap_err().kind(), kind);
    });
}

#[test]
fn closing_the_loop_with_writes_queued_drops_each_buffer_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut lp = EventLoop::new().unwrap();
    let (queued, _peer) = lp.block_on(async {
        let (c, s) = tcp_pair().await;
        small_buffers(&c, 16 * 1024);
        small_buffers(&s, 16 * 1024);
        let mut queued = 0;
        // The peer never reads: fill the kernel's buffers and the queue until a write waits.
        loop {
            let mut w = Box::pin(c.write_queued(Counted::<0>::new(vec![9u8; 32 * 1024], &drops)));
            match resolves_at_once(&mut w).await {
                Some(r) => {
                    r.unwrap();
                    queued += 1;
                }
                None => break, // dropped unqueued: its buffer is dropped here
            }
        }
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "only the unqueued one so far"
        );
        // The stream goes; its writes stay queued, one of them in the kernel.
        drop(c);
        (queued, s)
    });
    assert!(queued >= 2, "the queue took {queued} writes");
    lp.close().unwrap();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        queued + 1,
        "close cancelled the write in flight and dropped every queued buffer, once"
    );
}

#[test]
fn writes_queued_behind_one_in_flight_leave_together_in_one_op() {
    // Eleven small writes queued in one go: the first is submitted alone, the ten that wait
    // behind it must leave in one SENDMSG once it completes, not in ten SENDs one after
    // another. Nothing else on the loop completes meanwhile (no receive is armed).
    let mut lp = EventLoop::new().unwrap();
    let (c, s) = lp.block_on(tcp_pair());
    // The listener's accept, cancelled when it dropped, completes first; so does the loop's
    // room watcher's wake-up for the socket, which it is given on the first tried write (a
    // stream's second queued write: its first goes plainly).
    lp.block_on(async {
        for _ in 0..2 {
            c.write_queued(vec![255u8]).await.unwrap();
            c.flush().await.unwrap();
        }
        time::sleep(Duration::from_millis(20)).await;
    });
    let writes: Vec<Vec<u8>> = (0..11).map(|i| vec![i as u8; 100 + i]).collect();
    let before = lp.stats().completions;
    lp.block_on(async {
        for w in &writes {
            c.write_queued(w.clone()).await.unwrap();
        }
        c.flush().await.unwrap();
    });
    let ops = lp.stats().completions.wrapping_sub(before);
    assert!(
        ops <= 2,
        "11 queued writes took {ops} ops: the 10 behind the first should share one"
    );
    let got = lp.block_on(async {
        c.shutdown(Shutdown::Write).await.unwrap();
        read_to_end(|b| s.read(b)).await
    });
    assert_eq!(got[..2], [255, 255]);
    assert_eq!(
        &got[2..],
        writes.concat(),
        "every byte, in the order queued"
    );
}

#[test]
fn an_empty_queued_write_sends_nothing_and_flush_without_writes_is_ready() {
    EventLoop::new().unwrap().block_on(async {
        let (c, s) = tcp_pair().await;
        c.flush().await.unwrap();
        c.write_queued(Vec::new()).await.unwrap();
        c.write_queued(&b"x"[..]).await.unwrap();
        c.flush().await.unwrap();
        c.shutdown(Shutdown::Write).await.unwrap();
        assert_eq!(read_to_end(|b| s.read(b)).await, b"x");
    });
}

#[test]
fn timers_and_other_threads_reach_a_loop_whose_only_completions_are_queued_writes() {
    // The peer reads at most 4 KiB every 4 ms on its own thread, so the queued writes
    // complete one by one for about a quarter of a second and wake no task: the loop handles
    // them without turning. A timer due meanwhile, and a spawn from another thread, must
    // still be served on time, well before the writes are done.
    const WRITES: usize = 60; // 240 KiB: under the backlog bound, so no write waits
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut peer, _) = l.accept().unwrap();
        small_buffers(&peer, 16 * 1024);
        let mut got = 0;
        let mut buf = [0u8; 4096];
        loop {
            std::thread::sleep(Duration::from_millis(4));
            match peer.read(&mut buf).unwrap() {
                0 => return got,
                n => got += n,
            }
        }
    });
    let mut lp = EventLoop::new().unwrap();
    let handle = lp.handle();
    lp.block_on(async move {
        let c = TcpStream::connect(addr).await.unwrap();
        small_buffers(&c, 4096);
        for _ in 0..WRITES {
            c.write_queued(vec![5u8; 4096]).await.unwrap();
        }
        let start = std::time::Instant::now();
        time::sleep(Duration::from_millis(20)).await;
        let slept = start.elapsed();
        assert!(
            slept < Duration::from_millis(150),
            "a 20 ms sleep took {slept:?} while writes completed"
        );
        // The premise: the writes were still going out while the loop slept.
        assert!(
            resolves_at_once(&mut Box::pin(c.flush())).await.is_none(),
            "the queued writes were all sent before the sleep ended; nothing was tested"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let start = std::time::Instant::now();
        let spawner = std::thread::spawn(move || {
            let j = handle.spawn(async { 7 });
            tx.send(()).unwrap();
            j
        });
        rx.recv().unwrap();
        let j = spawner.join().unwrap();
        assert_eq!(j.await.unwrap(), 7);
        assert!(start.elapsed() < Duration::from_millis(150));
        c.flush().await.unwrap(); // every queued byte was sent
    });
    drop(lp);
    assert_eq!(reader.join().unwrap(), WRITES * 4096);
}

#[test]
fn a_queue_used_from_another_loop_panics_instead_of_waiting_forever() {
    let mut a = EventLoop::new().unwrap();
    let (c, _s) = a.block_on(async {
        let (c, s) = tcp_pair().await;
        c.write_queued(vec![1u8; 16]).await.unwrap();
        (c, s)
    });
    let mut b = EventLoop::new().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.block_on(async { c.flush().await })
    }));
    let msg = r.expect_err("flush on another loop must panic");
    let msg = msg
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| msg.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("another event loop"), "{msg}");
}

/// Reads `want` bytes (or to end of stream) from `c`, a peer of a stream served by the loop
/// `handle` reaches. Should no byte come for 5 s the loop is stuck: it is woken from here (a
/// task spawned from this thread rings its doorbell), and every 50 ms from then on, for at
/// most 5 s more, so that a test fails rather than hangs. Returns the bytes and whether that
/// happened.
fn read_unstuck(c: &mut std::net::TcpStream, want: usize, handle: &Handle) -> (Vec<u8>, bool) {
    use std::io::Read;
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut got, mut stalls) = (Vec::new(), 0);
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < want && stalls < 100 {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                stalls += 1;
                c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                drop(handle.spawn(async {}));
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
    (got, stalls > 0)
}

/// Queues `writes` back to back on a stream of an otherwise idle loop, whose peer is a thread
/// that starts reading after 300 ms: nothing but the loop's own bookkeeping can get them all
/// out, since no task waits for them (the loop's task waits for the peer's word). With
/// `fill`, the socket's buffer is filled first, outside the loop, so that the first write
/// finds it full. With `first`, `writes` are the stream's first (its first is a quiet try,
/// see `driver::quiet`); else a one-byte write and its flush go before. Returns the bytes the
/// peer got of `writes` and whether it stalled for 5 s (then it woke the loop from outside,
/// so that the test fails rather than hangs).
fn queue_on_an_idle_loop(fill: bool, first: bool, writes: Vec<Vec<u8>>) -> (Vec<u8>, bool) {
    use std::sync::Mutex;
    use std::task::Waker;
    let total: usize = writes.iter().map(Vec::len).sum();
    let pre = usize::from(!first);
    let mut lp = EventLoop::new().unwrap();
    let handle = lp.handle();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let done: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
    let done2 = done.clone();
    // Bytes sent to fill the socket, known before the peer starts reading.
    let filled_at = Arc::new(AtomicUsize::new(usize::MAX));
    let filled2 = filled_at.clone();
    let client = std::thread::spawn(move || {
        // Its buffers stay as they are: a receive buffer under loopback's segment size (64 KiB)
        // makes the kernel hold back window updates, and the transfer crawls on probes.
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let filled = filled2.load(Ordering::SeqCst);
        assert_ne!(
            filled,
            usize::MAX,
            "the loop had not filled the socket in 300 ms"
        );
        let (got, stalled) = read_unstuck(&mut c, pre + filled + total, &handle);
        let mut d = done2.lock().unwrap();
        d.0 = true;
        if let Some(w) = d.1.take() {
            w.wake();
        }
        (got, stalled)
    });
    lp.block_on(async {
        let (s, _) = l.accept().await.unwrap();
        small_buffers(&s, 16 * 1024);
        if !first {
            // A first write and its flush: what a stream does before the loop runs quiet.
            s.write_queued(vec![0u8]).await.unwrap();
            s.flush().await.unwrap();
        }
        let mut filled = 0;
        let junk = [3u8; 4096];
        // SAFETY: sends from a live local buffer on a live socket, without blocking.
        let send = || unsafe {
            libc::send(
                s.as_raw_fd(),
                junk.as_ptr().cast(),
                junk.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if fill {
            loop {
                let n = send();
                if n <= 0 {
                    break;
                }
                filled += n as usize;
            }
        }
        filled_at.store(filled, Ordering::SeqCst);
        for w in writes {
            s.write_queued(w).await.unwrap();
        }
        std::future::poll_fn(|cx| {
            let mut d = done.lock().unwrap();
            if d.0 {
                return Poll::Ready(());
            }
            d.1 = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    });
    let (got, stalled) = client.join().unwrap();
    let filled = filled_at.load(Ordering::SeqCst);
    assert!(got.len() >= pre + filled && got[pre..pre + filled].iter().all(|&b| b == 3));
    (got[pre + filled..].to_vec(), stalled)
}

#[test]
fn a_queued_write_that_finds_the_socket_full_goes_on_with_the_loop_otherwise_idle() {
    // The socket's buffer is full: tried at submit, the write comes back with nothing sent,
    // and only the loop's room watcher (see `driver::room`) wakes the loop once the peer has
    // read.
    let write = vec![2u8; 4096];
    let (got, stalled) = queue_on_an_idle_loop(true, false, vec![write.clone()]);
    assert!(
        !stalled,
        "the write stalled until the loop was woken from outside"
    );
    assert!(
        got == write,
        "{} of {} bytes arrived",
        got.len(),
        write.len()
    );
}

#[test]
fn a_first_write_that_finds_the_socket_full_goes_on_with_the_loop_otherwise_idle() {
    // A stream's first write is a quiet try, whose success would post nothing: found full,
    // it must post its failure at once and be resumed, with no room watcher armed for it.
    let writes = vec![chunk(1), chunk(2)];
    let (got, stalled) = queue_on_an_idle_loop(true, true, writes.clone());
    assert!(
        !stalled,
        "the first write stalled until the loop was woken from outside"
    );
    assert!(got == writes.concat(), "{} bytes arrived", got.len());
}

#[test]
fn a_first_write_and_one_behind_it_go_out_with_the_loop_otherwise_idle() {
    // The second waits behind the first, a quiet try: the loop must not sleep past that
    // try's confirmation, which no CQE announces.
    let writes = vec![chunk(1), chunk(2)];
    let (got, stalled) = queue_on_an_idle_loop(false, true, writes.clone());
    assert!(
        !stalled,
        "the second write waited until the loop was woken from outside"
    );
    assert!(got == writes.concat(), "{} bytes arrived", got.len());
}

#[test]
fn a_write_queued_behind_a_tried_one_goes_out_with_the_loop_otherwise_idle() {
    // The first is tried at submit; the second waits behind it, so the loop must see the
    // first one's completion at once, not when it next wakes.
    let writes = vec![chunk(1), chunk(2)];
    let (got, stalled) = queue_on_an_idle_loop(false, false, writes.clone());
    assert!(
        !stalled,
        "the second write waited until the loop was woken from outside"
    );
    assert!(got == writes.concat(), "{} bytes arrived", got.len());
}

#[test]
fn dropping_a_tcp_stream_with_queued_writes_sends_them_and_then_end_of_stream() {
    // Its writes were tried at submit and its socket is watched for room: neither may keep
    // the socket open once the stream and its writes are gone.
    let mut lp = EventLoop::new().unwrap();
    let handle = lp.handle();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let (got, stalled) = read_unstuck(&mut c, usize::MAX, &handle);
        tx.send(()).unwrap();
        (got.len(), stalled)
    });
    lp.block_on(async {
        let (s, _) = l.accept().await.unwrap();
        for i in 0..3 {
            s.write_queued(chunk(i)).await.unwrap();
            s.flush().await.unwrap();
        }
        s.write_queued(chunk(3)).await.unwrap();
        drop(s);
        // The loop keeps running until the peer is done.
        while rx.try_recv().is_err() {
            time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (got, stalled) = client.join().unwrap();
    assert_eq!(got, (0..4).map(|i| chunk(i).len()).sum::<usize>());
    assert!(!stalled, "no end of stream within 5 s of the last byte");
}

#[test]
fn an_echo_through_a_one_buffer_pool_keeps_going_with_the_peer_outside_the_loop() {
    // Each reply holds the pool's only buffer until it is sent, and the next receive waits
    // for it: the loop must see each tried reply's completion at once, since that is what
    // gives the buffer back, with nothing else to wake it (the peer waits for the echo).
    use std::io::Write;
    const LEN: usize = 4096;
    let mut lp = EventLoop::builder().recv_buffers(1, 64).build().unwrap();
    let handle = lp.handle();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let sent: Vec<u8> = (0..LEN).map(|i| (i * 13) as u8).collect();
        c.write_all(&sent).unwrap();
        let (got, stalled) = read_unstuck(&mut c, LEN, &handle);
        c.shutdown(Shutdown::Write).unwrap();
        (got == sent, stalled)
    });
    lp.block_on(async {
        let (s, _) = l.accept().await.unwrap();
        loop {
            let b = s.recv().await.unwrap();
            if b.is_empty() {
                break;
            }
            s.write_queued(b).await.unwrap();
        }
        s.flush().await.unwrap();
    });
    let (same, stalled) = client.join().unwrap();
    assert!(
        !stalled,
        "the echo stalled until the loop was woken from outside"
    );
    assert!(same, "the echo differs from what was sent");
}

#[test]
fn a_peer_reset_mid_stream_fails_the_writes_that_follow() {
    // Queued and awaited writes of up to 16 MiB towards a peer that reads a little, then
    // resets: a write fails with the reset (or a broken pipe), those after it fail too,
    // nothing panics and no task is left.
    let mut lp = EventLoop::builder().recv_buffers(64, 4096).build().unwrap();
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let _ = c.read(&mut buf);
            socket2::SockRef::from(&c)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(c); // RST
        });
        let (s, _) = l.accept().await.unwrap();
        small_buffers(&s, 64 * 1024);
        let mut failed = None;
        for i in 0..256usize {
            let chunk = vec![i as u8; 64 * 1024];
            let r = if i % 2 == 0 {
                s.write_queued(chunk).await
            } else {
                s.write_all(chunk).await.0
            };
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        peer.join().unwrap();
        let e = failed.expect("writes to a reset peer never failed");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
        // Later writes fail too: an awaited one at once; a queued one when it is sent, which
        // the flush after it reports.
        let (r, _) = s.write_all(&b"late"[..]).await;
        assert!(r.is_err(), "an awaited write after the reset succeeded");
        let queued = s.write_queued(&b"later"[..]).await;
        assert!(
            queued.is_err() || s.flush().await.is_err(),
            "a queued write after the reset was reported sent"
        );
    });
    assert_eq!(lp.stats().tasks, 0);
}
