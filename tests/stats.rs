//! `EventLoop::stats`: the loop's counters through the public API.

mod common;

use std::io::Write;
use std::time::Duration;

use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, time, EventLoop};

#[test]
fn stats_count_tasks_timers_completions_and_held_buffers() {
    let mut lp = EventLoop::builder().recv_buffers(64, 4096).build().unwrap();
    let start = lp.stats();
    assert_eq!(start.tasks, 0);
    assert_eq!(start.timers, 0);
    let pool = start
        .recv_pool
        .expect("this kernel has provided-buffer rings");
    assert_eq!((pool.buffers, pool.free), (64, 64));

    let sleeper = lp.spawn(time::sleep(Duration::from_secs(60)));
    lp.block_on(async {
        time::sleep(Duration::from_millis(1)).await; // the sleeper registers its timer
    });
    let s = lp.stats();
    assert_eq!(s.tasks, 1, "the sleeping task is alive");
    assert_eq!(s.timers, 1, "its timer is pending");
    sleeper.abort();

    let held = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (s, _) = l.accept().await.unwrap();
        let c = c.await.unwrap();
        let (r, _) = c.write_all(&b"hello"[..]).await;
        r.unwrap();
        let buf = s.recv().await.unwrap();
        assert_eq!(&buf[..], b"hello");
        (buf, s, c)
    });
    let s = lp.stats();
    assert_eq!(s.tasks, 0, "every task finished");
    let pool = s.recv_pool.unwrap();
    assert_eq!(pool.free, 63, "one buffer is held by the RecvBuf");
    assert!(s.completions > start.completions);
    assert_eq!(s.stray_completions, 0);
    drop(held);
    assert_eq!(lp.stats().recv_pool.unwrap().free, 64, "the buffer is back");
}

#[test]
fn a_handle_reads_the_stats_from_another_thread_and_from_the_loop_itself() {
    let (htx, hrx) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        let mut lp = EventLoop::new().unwrap();
        let handle = lp.handle();
        htx.send(handle.clone()).unwrap();
        // Three sleeping tasks and their timers, for the other thread to see.
        for _ in 0..3 {
            lp.spawn(time::sleep(Duration::from_secs(60)));
        }
        lp.spawn(async move {
            // From the loop's own task: read at once, no waiting on itself.
            let own = handle.stats();
            assert!(own.tasks >= 3, "{own:?}");
            handle.stopping().await;
        });
        lp.run_forever().unwrap();
    });
    let handle = hrx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let s = handle.stats();
    // The three sleepers and the task waiting for the stop; the task reading the stats may
    // be counted too.
    assert!(s.tasks >= 4, "{s:?}");
    assert_eq!(s.timers, 3, "{s:?}");
    assert!(s.completions > 0, "{s:?}");
    handle.stop();
    runner.join().unwrap();
    // A loop that is gone answers nothing: the default, at once.
    let start = std::time::Instant::now();
    assert_eq!(handle.stats(), ringloop::Stats::default());
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[test]
fn turns_and_enters_count_the_loops_work() {
    let mut lp = EventLoop::new().unwrap();
    let start = lp.stats();
    let sleeper = lp.spawn(async {
        for _ in 0..10 {
            time::sleep(Duration::from_millis(1)).await;
        }
    });
    lp.block_on(sleeper).unwrap();
    let s = lp.stats();
    // Each sleep ends in a wait for the timer, and a wake-up that polls the task again.
    assert!(s.turns >= start.turns + 10, "{start:?} -> {s:?}");
    assert!(s.enters >= start.enters + 10, "{start:?} -> {s:?}");
    assert!(s.enters <= s.turns, "at most one enter a turn here: {s:?}");
    assert_eq!(s.cq_overflows, 0);
}

#[test]
fn queued_write_bytes_show_what_a_peer_that_does_not_read_holds() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (s, _) = l.accept().await.unwrap();
        let c = c.await.unwrap();
        common::small_buffers(&s, 16 * 1024);
        common::small_buffers(&c, 16 * 1024);
        // Far more than the socket buffers take: the rest stays in the queue.
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..3 {
            s.write_queued(chunk.clone()).await.unwrap();
        }
        time::sleep(Duration::from_millis(20)).await;
        let held = ringloop::Handle::current().stats().queued_write_bytes;
        assert!(held > 0 && held <= 3 * 64 * 1024, "{held}");
        // The peer reads everything: the queue drains, and the count goes to zero.
        let mut got = 0;
        while got < 3 * 64 * 1024 {
            got += c.recv().await.unwrap().len();
        }
        s.flush().await.unwrap();
        assert_eq!(ringloop::Handle::current().stats().queued_write_bytes, 0);
    });
}

#[test]
fn a_completion_ring_too_small_for_a_burst_shows_overflows() {
    // A completion ring of four entries, and 32 single-shot reads that complete together:
    // their peers write while the loop's thread is busy, so the kernel has 32 completions to
    // post at the loop's next wait.
    let mut lp = EventLoop::builder().entries(1).build().unwrap();
    let got = lp.block_on(async {
        let mut readers = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..32 {
            let (peer, conn) = common::std_pair().await;
            peers.push(peer);
            readers.push(spawn(async move {
                let (r, buf) = conn.read(Vec::with_capacity(16)).await;
                (r.unwrap(), buf)
            }));
        }
        time::sleep(Duration::from_millis(5)).await; // every read is in the kernel
        for p in &mut peers {
            p.write_all(b"x").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut got = 0;
        for r in readers {
            let (n, buf) = r.await.unwrap();
            assert_eq!((n, &buf[..]), (1, &b"x"[..]));
            got += 1;
        }
        got
    });
    assert_eq!(got, 32, "every read completed: nothing was lost");
    let s = lp.stats();
    assert!(s.cq_overflows > 0, "{s:?}");
}
