//! Op lifecycle through the real kernel: buffers outlive dropped futures until their CQE,
//! tiny rings, fd hygiene.
//!
//! The pipe reads use `ringloop::__private::read`, the crate's internal read op, until the
//! public file and socket types exist.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringloop::__private::{nop, read};
use ringloop::{time, yield_now, EventLoop};

mod common;
use common::Counted;

/// An empty buffer of `cap` bytes that counts its drops.
fn tracked(cap: usize) -> (Counted, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (Counted::new(Vec::with_capacity(cap), &drops), drops)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_fd(fd: RawFd, data: &[u8]) {
    // SAFETY: writes `data.len()` bytes from a live slice.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

fn read_fd_nonblocking(fd: RawFd) -> Vec<u8> {
    let mut buf = [0u8; 64];
    // SAFETY: MSG-less poll with zero timeout on one valid descriptor.
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 {
        return Vec::new();
    }
    // SAFETY: reads into a live stack buffer of the given size.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    buf[..n.max(0) as usize].to_vec()
}

/// Runs enough loop turns for every ready task to be polled (a turn polls at most 128).
fn settle(lp: &mut EventLoop, turns: usize) {
    lp.block_on(async {
        for _ in 0..turns {
            yield_now().await;
        }
    });
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn read_completes_into_owned_vec() {
    let mut lp = EventLoop::new().unwrap();
    let (r, w) = pipe();
    write_fd(w.as_raw_fd(), b"hello");
    let (res, buf) = lp.block_on(read(r.as_raw_fd(), Vec::with_capacity(64)));
    assert_eq!(res.unwrap(), 5);
    assert_eq!(buf, b"hello");
    assert_eq!(buf.capacity(), 64, "same allocation comes back");
}

#[test]
fn dropped_read_keeps_its_buffer_until_the_kernel_is_done() {
    let mut lp = EventLoop::new().unwrap();
    let (r, w) = pipe();
    let (buf, drops) = tracked(64);
    let fd = r.as_raw_fd();
    lp.block_on(async {
        // Submit the read, then drop its future while the kernel holds the buffer.
        let r = time::timeout(Duration::from_millis(10), read(fd, buf)).await;
        assert!(r.is_err(), "nothing was written, the read must time out");
    });
    // The cancel may not have been reaped yet; the buffer must not have been freed before.
    lp.block_on(async {
        for _ in 0..10 {
            yield_now().await;
        }
        time::sleep(Duration::from_millis(5)).await;
    });
    assert_eq!(drops.load(Ordering::SeqCst), 1, "freed once, after the CQE");
    assert_eq!(
        lp.stats().ops_in_kernel,
        1,
        "only the loop's own doorbell read remains"
    );
    // The loop keeps running, and the cancelled read took no data.
    write_fd(w.as_raw_fd(), b"after");
    let (res, got) = lp.block_on(read(fd, Vec::with_capacity(64)));
    assert_eq!(res.unwrap(), 5);
    assert_eq!(got, b"after");
}

#[test]
fn aborted_task_keeps_its_read_buffer_until_the_cqe() {
    let mut lp = EventLoop::new().unwrap();
    let (r, w) = pipe();
    let (buf, drops) = tracked(64);
    let fd = r.as_raw_fd();
    let jh = lp.spawn(async move {
        let _ = read(fd, buf).await;
    });
    let e = lp.block_on(async move {
        yield_now().await; // let the task submit its read
        yield_now().await;
        jh.abort();
        jh.await.unwrap_err()
    });
    assert!(e.is_cancelled());
    lp.block_on(time::sleep(Duration::from_millis(5)));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    write_fd(w.as_raw_fd(), b"x");
    assert_eq!(
        read_fd_nonblocking(r.as_raw_fd()),
        b"x",
        "the aborted read took no data"
    );
}

#[test]
fn close_with_a_read_in_flight_waits_for_the_kernel_then_frees() {
    let lp = EventLoop::new().unwrap();
    let (r, w) = pipe();
    let (buf, drops) = tracked(64);
    let fd = r.as_raw_fd();
    let mut lp = lp;
    lp.spawn(async move {
        let _ = read(fd, buf).await;
    });
    lp.block_on(async {
        yield_now().await;
        yield_now().await;
    });
    assert_eq!(drops.load(Ordering::SeqCst), 0, "the read is in flight");
    lp.close().unwrap();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "freed by close, after the CQE"
    );
    write_fd(w.as_raw_fd(), b"y");
    assert_eq!(read_fd_nonblocking(r.as_raw_fd()), b"y");
}

#[test]
fn ten_thousand_pending_timers_then_close_is_prompt_and_ok() {
    let mut lp = EventLoop::new().unwrap();
    for i in 0..10_000u64 {
        lp.spawn(time::sleep(Duration::from_secs(60 + i % 100)));
    }
    settle(&mut lp, 100);
    assert_eq!(lp.stats().timers, 10_000);
    let t0 = Instant::now();
    lp.close().unwrap();
    // Generous: this only guards against close waiting for the timers.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn a_completion_reaped_to_make_room_in_a_full_ring_wakes_its_task() {
    // A one-entry SQ: the wake-up read pushed as the loop goes idle finds the accept's SQE
    // still queued, and submitting it to make room reaps the accept's completion (the
    // connection is already waiting). The loop must run the woken task, not sleep on.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lp = EventLoop::builder().entries(1).build().unwrap();
        let r = lp.block_on(async {
            let l = ringloop::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().await.unwrap();
            (c, s)
        });
        let _ = tx.send(r.0.peer_addr().is_ok());
    });
    let done = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(done, Ok(true), "the loop slept with its task woken");
}

#[test]
fn tiny_ring_runs_two_thousand_concurrent_ops() {
    let mut lp = EventLoop::builder().entries(4).build().unwrap();
    assert_eq!(lp.features().sq_entries(), 4);
    // 1000 pipe reads really in flight at once (200 pipes x 5 readers), plus 1000 NOPs.
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..200).map(|_| pipe()).collect();
    let done = Arc::new(AtomicUsize::new(0));
    for (r, _) in &pipes {
        for _ in 0..5 {
            let fd = r.as_raw_fd();
            let done = done.clone();
            lp.spawn(async move {
                let (res, buf) = read(fd, Vec::with_capacity(1)).await;
                assert_eq!(res.unwrap(), 1);
                assert_eq!(buf, b"z");
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
    for _ in 0..1000 {
        let done = done.clone();
        lp.spawn(async move {
            nop().await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
        });
    }
    settle(&mut lp, 100);
    assert_eq!(done.load(Ordering::SeqCst), 1000, "the NOPs finished");
    assert!(
        lp.stats().ops_in_kernel >= 1000,
        "every read is in the kernel"
    );
    for (_, w) in &pipes {
        write_fd(w.as_raw_fd(), b"zzzzz");
    }
    lp.block_on(async {
        while done.load(Ordering::SeqCst) < 2000 {
            time::sleep(Duration::from_millis(1)).await;
        }
    });
    assert_eq!(lp.stats().stray_completions, 0);
    lp.close().unwrap();
}

#[test]
fn fd_count_unchanged_after_create_use_close_and_after_drop() {
    // Warm up lazily opened descriptors (none expected, but be fair to the count).
    EventLoop::new().unwrap().close().unwrap();
    let before = open_fds();
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async { nop().await.unwrap() });
    lp.close().unwrap();
    assert_eq!(open_fds(), before, "after close");
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async { nop().await.unwrap() });
    drop(lp);
    assert_eq!(open_fds(), before, "after drop without close");
}

#[test]
fn forced_fallback_setup_modes_run_the_same_loop() {
    for mode in [ringloop::SetupMode::CoopTaskrun, ringloop::SetupMode::Basic] {
        let mut lp = EventLoop::builder().setup_mode(mode).build().unwrap();
        assert_eq!(lp.features().setup_mode(), mode);
        let (r, w) = pipe();
        let fd = r.as_raw_fd();
        let h = lp.handle();
        let jh = lp.spawn(async move {
            let (res, buf) = read(fd, Vec::with_capacity(8)).await;
            h.stop();
            (res.unwrap(), buf)
        });
        let w_fd = w.as_raw_fd();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            write_fd(w_fd, b"mode");
        });
        lp.run_forever().unwrap();
        t.join().unwrap();
        assert_eq!(lp.block_on(jh).unwrap(), (4, b"mode".to_vec()));
        drop(w);
    }
}

#[test]
fn close_past_its_timeout_leaks_the_buffer_and_says_so() {
    // A zero close timeout: the read cannot have been cancelled and reaped in time.
    let mut lp = EventLoop::builder()
        .close_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let (r, _w) = pipe();
    let (buf, drops) = tracked(64);
    let fd = r.as_raw_fd();
    lp.spawn(async move {
        let _ = read(fd, buf).await;
    });
    settle(&mut lp, 2);
    let e = lp.close().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("leaked"), "{e}");
    assert_eq!(
        drops.load(Ordering::SeqCst),
        0,
        "memory the kernel may still write is never freed"
    );
}

#[test]
#[should_panic(expected = "belong to the loop that first polled them")]
fn op_polled_on_another_loop_panics_saying_so() {
    let mut a = EventLoop::new().unwrap();
    let (r, _w) = pipe();
    let mut fut = Box::pin(read(r.as_raw_fd(), Vec::with_capacity(8)));
    // Start it on loop `a`...
    a.block_on(std::future::poll_fn(|cx| {
        let _ = fut.as_mut().poll(cx);
        std::task::Poll::Ready(())
    }));
    // ...then poll it on loop `b`.
    let mut b = EventLoop::new().unwrap();
    let _ = b.block_on(fut);
}

#[test]
fn waker_woken_from_another_thread_wakes_the_parked_loop() {
    let mut lp = EventLoop::new().unwrap();
    let t0 = Instant::now();
    let woke = lp.block_on(async {
        let mut sent = false;
        std::future::poll_fn(|cx| {
            if sent {
                return std::task::Poll::Ready(t0.elapsed());
            }
            sent = true;
            let w = cx.waker().clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                w.wake();
            });
            std::task::Poll::Pending
        })
        .await
    });
    assert!(woke >= Duration::from_millis(30));
    // And the same for a spawned task's waker (the remote wake path).
    let jh = lp.spawn(async {
        let mut sent = false;
        std::future::poll_fn(|cx| {
            if sent {
                return std::task::Poll::Ready(7);
            }
            sent = true;
            let w = cx.waker().clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(10));
                w.wake_by_ref();
                drop(w);
            });
            std::task::Poll::Pending
        })
        .await
    });
    assert_eq!(lp.block_on(jh).unwrap(), 7);
}

#[test]
fn join_handle_awaited_from_another_loop_on_another_thread() {
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let jh = lp.spawn(async {
        time::sleep(Duration::from_millis(10)).await;
        String::from("from loop one")
    });
    let t = std::thread::spawn(move || {
        let mut other = EventLoop::new().unwrap();
        let s = other.block_on(jh).unwrap();
        h.stop();
        s
    });
    lp.run_forever().unwrap();
    assert_eq!(t.join().unwrap(), "from loop one");
}
