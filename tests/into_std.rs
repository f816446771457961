//! Sockets handed to ringloop and back: `into_std` loses no byte in either direction,
//! `FromRawFd` adopts a descriptor, `connect_with` connects a socket configured beforehand.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use ringloop::net::{TcpStream, UdpSocket, UnixStream};
use ringloop::{time, Builder, EventLoop};

/// The three receive paths: multishot, one buffer-select receive at a time, heap buffers.
fn builders() -> [(&'static str, Builder); 3] {
    [
        ("multishot", EventLoop::builder()),
        ("buffer select", EventLoop::builder().multishot(false)),
        ("heap buffers", EventLoop::builder().recv_buffer_ring(false)),
    ]
}

#[test]
fn into_std_returns_the_bytes_received_and_not_yet_read() {
    for (path, b) in builders() {
        let mut lp = b.build().unwrap();
        let all = common::pattern(3, 300);
        let got = lp.block_on(async {
            let (mut peer, conn) = common::std_pair().await;
            peer.write_all(&all[..100]).unwrap();
            let mut got = conn.recv().await.unwrap().to_vec();
            // A receive left in flight by a dropped future (the single-shot paths keep it in
            // the stream), then bytes that arrive while nobody reads.
            if let Ok(more) = time::timeout(Duration::from_millis(1), conn.recv()).await {
                got.extend_from_slice(&more.unwrap());
            }
            peer.write_all(&all[100..200]).unwrap();
            time::sleep(Duration::from_millis(20)).await;
            let (mut std_conn, held) = conn.into_std().await.unwrap();
            got.extend_from_slice(&held);
            peer.write_all(&all[200..]).unwrap();
            drop(peer);
            // What was not yet in the loop comes from the socket, in blocking mode.
            std_conn.read_to_end(&mut got).unwrap();
            got
        });
        assert_eq!(got, all, "{path}: the bytes, in order");
    }
}

#[test]
fn into_std_sends_every_queued_write_first() {
    let mut lp = EventLoop::new().unwrap();
    let (std_conn, reader) = lp.block_on(async {
        let (peer, conn) = common::std_pair().await;
        common::small_buffers(&conn, 16 * 1024);
        let reader = std::thread::spawn(move || {
            let mut peer = peer;
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        for i in 0..16u8 {
            conn.write_queued(common::pattern(i, 64 * 1024))
                .await
                .unwrap();
        }
        let (std_conn, held) = conn.into_std().await.unwrap();
        assert!(held.is_empty());
        (std_conn, reader)
    });
    let mut std_conn = std_conn;
    std_conn.write_all(b"after").unwrap();
    drop(std_conn);
    let got = reader.join().unwrap();
    let mut want: Vec<u8> = (0..16u8)
        .flat_map(|i| common::pattern(i, 64 * 1024))
        .collect();
    want.extend_from_slice(b"after");
    assert!(got == want, "{} bytes, {} expected", got.len(), want.len());
}

/// Whether an epoll instance of this process watches descriptor `fd` (its fdinfo lists it).
fn epoll_watches(fd: i32) -> bool {
    std::fs::read_dir("/proc/self/fd").unwrap().any(|e| {
        let e = e.unwrap();
        let is_epoll =
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("eventpoll"));
        let info = format!("/proc/self/fdinfo/{}", e.file_name().to_string_lossy());
        is_epoll
            && std::fs::read_to_string(info)
                .is_ok_and(|s| s.lines().any(|l| l.starts_with(&format!("tfd: {fd:>8}"))))
    })
}

#[test]
fn into_std_takes_the_socket_out_of_the_loops_writability_watch() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let (mut peer, conn) = common::std_pair().await;
        // The second queued write is tried at submit, which adds the socket to the watch.
        for _ in 0..2 {
            conn.write_queued(&b"ping"[..]).await.unwrap();
            conn.flush().await.unwrap();
        }
        let fd = conn.as_raw_fd();
        assert!(
            epoll_watches(fd),
            "the loop watches the socket once it tried a send"
        );
        let (std_conn, _) = conn.into_std().await.unwrap();
        assert!(!epoll_watches(fd), "not once it is handed back");
        let mut buf = [0; 8];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pingping");
        drop(std_conn);
    });
}

#[test]
fn unix_and_udp_sockets_go_back_to_std_too() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let (a, b) = UnixStream::pair().unwrap();
        a.write_queued(&b"unix"[..]).await.unwrap();
        let (mut a, held) = a.into_std().await.unwrap();
        assert!(held.is_empty());
        a.write_all(b"!").unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend_from_slice(&b.recv().await.unwrap());
        }
        assert_eq!(got, b"unix!");

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = u.local_addr().unwrap();
        // A receive dropped mid-way: its cancel completes before the socket is handed back.
        let _ = time::timeout(Duration::from_millis(1), u.recv(vec![0u8; 64])).await;
        let u = u.into_std().await.unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"dgram", addr).unwrap();
        let mut buf = [0; 16];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"dgram");
    });
}

/// Whether `fd` has `O_NONBLOCK` set.
fn nonblocking(fd: i32) -> bool {
    // SAFETY: F_GETFL takes no pointer; the kernel checks the descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

#[test]
fn from_raw_fd_adopts_a_descriptor_in_blocking_mode() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        let (mut peer, conn) = common::std_pair().await;
        let (std_conn, _) = conn.into_std().await.unwrap();
        // Non-blocking, as another runtime would leave it; some kernels' io_uring then
        // reports EAGAIN instead of waiting, so adopting it clears the flag.
        std_conn.set_nonblocking(true).unwrap();
        let fd = std_conn.into_raw_fd();
        // SAFETY: the descriptor is open and given up by `into_raw_fd`.
        let conn = unsafe { TcpStream::from_raw_fd(fd) };
        assert!(!nonblocking(fd));
        let echo = ringloop::spawn(async move {
            let buf = conn.recv().await.unwrap();
            conn.write_all(buf).await.0.unwrap();
        });
        time::sleep(Duration::from_millis(5)).await;
        peer.write_all(b"late").unwrap();
        echo.await.unwrap();
        let mut buf = [0; 4];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");

        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_nonblocking(true).unwrap();
        let fd = u.into_raw_fd();
        // SAFETY: as above.
        let u = unsafe { UdpSocket::from_raw_fd(fd) };
        assert!(!nonblocking(fd));
        drop(u);
    });
}

#[test]
fn a_listener_goes_back_to_std_with_the_connections_it_took_ahead() {
    for (path, b) in [
        ("multishot accept", EventLoop::builder()),
        (
            "one accept per call",
            EventLoop::builder().multishot_accept(false),
        ),
    ] {
        let mut lp = b.build().unwrap();
        let (taken, in_backlog) = lp.block_on(async {
            let l = ringloop::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let first = std::net::TcpStream::connect(addr).unwrap();
            drop(l.accept().await.unwrap());
            // Five more, taken by the armed accept (or by an accept whose future is dropped)
            // while nobody asks for them.
            let clients: Vec<_> = (0..5)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            // One may come back from it: counted as taken.
            let returned = time::timeout(Duration::from_millis(1), l.accept())
                .await
                .map_or(0, |r| usize::from(r.is_ok()));
            time::sleep(Duration::from_millis(20)).await;
            let (std_l, taken) = l.into_std().await.unwrap();
            std_l.set_nonblocking(true).unwrap();
            let in_backlog = std::iter::from_fn(|| std_l.accept().ok()).count();
            drop((first, clients));
            (returned + taken.len(), in_backlog)
        });
        assert_eq!(taken + in_backlog, 5, "{path}: {taken} + {in_backlog}");
        assert!(taken > 0, "{path}: the loop had taken some");
    }
}
