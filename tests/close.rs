//! How a dropped stream's descriptor is closed: by the ring's next enter on its loop's
//! thread, with `close(2)` anywhere else, and never leaked when the loop closes.

use std::io::Read;
use std::net::TcpStream as StdStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use ringloop::net::{TcpListener, TcpStream};
use ringloop::EventLoop;

/// The inode behind `fd`, if it is open. Sockets' inodes are unique, so a test holding one
/// can tell its descriptor from another test's that reused the number.
fn inode(fd: i32) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `stat` into `st`, which is large enough; it is read only if
    // the call succeeded.
    (unsafe { libc::fstat(fd, st.as_mut_ptr()) } == 0).then(|| unsafe { st.assume_init() }.st_ino)
}

/// A descriptor number and its inode, to check later whether it is still that socket.
struct Tracked {
    fd: i32,
    ino: u64,
}

impl Tracked {
    fn of(s: &TcpStream) -> Tracked {
        let fd = s.as_raw_fd();
        Tracked {
            fd,
            ino: inode(fd).expect("an open stream"),
        }
    }

    fn is_open(&self) -> bool {
        inode(self.fd) == Some(self.ino)
    }
}

/// Accepts one connection from a blocking std client; returns both ends.
async fn pair(l: &TcpListener) -> (TcpStream, StdStream) {
    let addr = l.local_addr().unwrap();
    let client = std::thread::spawn(move || StdStream::connect(addr).unwrap());
    let (s, _) = l.accept().await.unwrap();
    let c = client.join().unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (s, c)
}

/// The peer sees the connection closed: a read returns end of file, not a timeout.
fn assert_eof(c: &mut StdStream) {
    let mut b = [0u8; 8];
    assert_eq!(
        c.read(&mut b).unwrap(),
        0,
        "the peer should see end of file"
    );
}

#[test]
fn a_stream_dropped_on_its_loop_is_closed_by_the_ring_at_the_next_enter() {
    let mut lp = EventLoop::new().unwrap();
    let before = lp.stats().ring_closes;
    let (tracked, mut client) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (s, c) = pair(&l).await;
        let t = Tracked::of(&s);
        drop(s);
        assert!(
            t.is_open(),
            "queued for the ring, not closed with close(2) at once"
        );
        // The turn that polls this task again enters the kernel, and the close goes with it.
        ringloop::yield_now().await;
        assert!(!t.is_open(), "closed by the enter that followed the drop");
        (t, c)
    });
    assert!(!tracked.is_open());
    assert_eq!(lp.stats().ring_closes - before, 1, "the ring closed it");
    assert_eof(&mut client);
    lp.close().unwrap();
}

/// A close's CQE is not what a wait waits for: a wait that its deadline ended still counts
/// as empty when the close it submitted completed inside it.
#[test]
fn a_wait_its_deadline_ends_is_empty_though_it_reaped_a_close() {
    // Each wait takes the next deadline itself: no timer CQE ends it.
    let mut lp = EventLoop::builder().kernel_timer(false).build().unwrap();
    let (s, _client) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = pair(&l).await;
        drop(l);
        // Enters that take in the end of the listener's accept: from here on, the close's
        // CQE is the only one to come.
        for _ in 0..3 {
            ringloop::yield_now().await;
        }
        p
    });
    let tracked = Tracked::of(&s);
    let (empty, closes) = (lp.stats().empty_waits, lp.stats().ring_closes);
    lp.block_on(async move {
        drop(s);
        // The park that follows submits the close, then sleeps until the deadline.
        ringloop::time::sleep(Duration::from_millis(30)).await;
    });
    assert!(!tracked.is_open());
    assert_eq!(lp.stats().ring_closes - closes, 1, "the ring closed it");
    // At least one: a signal could end a wait early too, but 0 would mean the close's CQE
    // counted as what the wait was for.
    let empty = lp.stats().empty_waits - empty;
    assert!(
        empty >= 1,
        "the wait the deadline ended, with only the close's CQE in it, counted as not empty"
    );
}

/// A stream a task still holds when the loop closes: dropping the task queues its close
/// while the loop is closing, and the close makes it rather than leaking it.
#[test]
fn closing_the_loop_closes_the_streams_its_tasks_held() {
    let mut lp = EventLoop::new().unwrap();
    let (tracked, mut client) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (s, c) = pair(&l).await;
        let t = Tracked::of(&s);
        drop(ringloop::spawn(async move {
            let _ = s.recv().await; // the client sends nothing: waits until the loop closes
        }));
        ringloop::yield_now().await; // the task arms its receive
        (t, c)
    });
    assert!(tracked.is_open(), "the task still holds it");
    lp.close().unwrap();
    assert!(!tracked.is_open(), "closed when the loop closed");
    assert_eof(&mut client);
}

#[test]
fn a_stream_dropped_off_its_loop_closes_at_once() {
    let mut lp = EventLoop::new().unwrap();
    let (stream, mut client) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        pair(&l).await
    });
    let tracked = Tracked::of(&stream);
    let before = lp.stats().ring_closes;
    // Dropped on a thread with no loop: nothing there could submit a close.
    std::thread::spawn(move || drop(stream)).join().unwrap();
    assert!(!tracked.is_open(), "closed by the drop itself");
    assert_eof(&mut client);
    assert_eq!(lp.stats().ring_closes, before);
    lp.close().unwrap();
}

#[test]
fn a_thousand_connections_dropped_on_the_loop_leave_no_descriptor_open() {
    let mut lp = EventLoop::new().unwrap();
    let before = lp.stats().ring_closes;
    let tracked = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut tracked = Vec::new();
        for _ in 0..1000 {
            let c = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            tracked.push(Tracked::of(&c));
            tracked.push(Tracked::of(&s));
        }
        ringloop::yield_now().await;
        tracked
    });
    let open = tracked.iter().filter(|t| t.is_open()).count();
    assert_eq!(open, 0, "every dropped stream's descriptor is closed");
    assert_eq!(lp.stats().ring_closes - before, 2000);
    lp.close().unwrap();
}

#[test]
fn a_stream_dropped_as_block_on_returns_is_closed_before_it_returns() {
    let mut lp = EventLoop::new().unwrap();
    let (tracked, mut client) = lp.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (s, c) = pair(&l).await;
        let t = Tracked::of(&s);
        drop(s);
        (t, c)
    });
    // The loop is not running and not closed: the close was submitted on the way out.
    assert!(!tracked.is_open(), "closed when block_on returned");
    assert_eof(&mut client);
    drop(lp);
}
