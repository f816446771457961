//! Listeners with a multishot accept kept armed (Linux 5.19+) and with one accept per call:
//! cancel-safety, back-pressure, and what a dropped listener does with connections it took.

use std::io::Read;
use std::time::Duration;

use ringloop::net::{TcpListener, UnixListener};
use ringloop::{time, EventLoop};

fn loop_with(multishot: bool) -> EventLoop {
    EventLoop::builder()
        .multishot_accept(multishot)
        .build()
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn features_report_the_accept_path_in_use() {
    assert!(
        loop_with(true).features().multishot_accept(),
        "this kernel has multishot accept (5.19+)"
    );
    assert!(!loop_with(false).features().multishot_accept());
}

/// Accept futures dropped by a timeout, with and without multishot: no connection is lost,
/// and every peer address is right.
#[test]
fn timed_out_accepts_lose_no_connection_on_either_path() {
    for multishot in [true, false] {
        loop_with(multishot).block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let mut clients = Vec::new();
            let mut got = Vec::new();
            for i in 0..40 {
                // Every other accept is given no time at all.
                let wait = if i % 2 == 0 { 0 } else { 50 };
                if i % 4 == 0 {
                    clients.push(std::net::TcpStream::connect(addr).unwrap());
                }
                if let Ok(r) = time::timeout(Duration::from_millis(wait), l.accept()).await {
                    got.push(r.unwrap());
                }
            }
            while got.len() < clients.len() {
                let r = time::timeout(Duration::from_secs(5), l.accept()).await;
                got.push(r.expect("a connection was lost").unwrap());
            }
            let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
            let mut peers: Vec<_> = got.iter().map(|(_, a)| *a).collect();
            want.sort();
            peers.sort();
            assert_eq!(peers, want, "multishot={multishot}");
        });
    }
}

/// A server that stops calling `accept` does not drain the kernel's backlog into memory: the
/// multishot accept pauses after taking 128 connections ahead, and resumes when they are taken.
#[test]
fn multishot_accept_pauses_when_connections_are_not_taken() {
    loop_with(true).block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Arm the accept.
        assert!(time::timeout(Duration::from_millis(5), l.accept())
            .await
            .is_err());
        let base = open_fds();
        let mut clients = Vec::new();
        for _ in 0..3 {
            for _ in 0..100 {
                clients.push(std::net::TcpStream::connect(addr).unwrap());
            }
            // Let the loop reap what the kernel accepted.
            time::sleep(Duration::from_millis(30)).await;
        }
        let held = open_fds() - base - clients.len();
        assert!(
            (100..=240).contains(&held),
            "the server took {held} of 300 connections ahead; expected the first batch, \
             then a pause past 128"
        );
        let mut peers = Vec::new();
        for _ in 0..clients.len() {
            let (_conn, peer) = time::timeout(Duration::from_secs(5), l.accept())
                .await
                .expect("a connection left in the backlog was accepted after the pause")
                .unwrap();
            peers.push(peer);
        }
        let mut want: Vec<_> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
        want.sort();
        peers.sort();
        assert_eq!(peers, want);
    });
}

/// Connections a multishot accept took but nobody claimed are closed with the listener.
#[test]
fn dropping_a_listener_closes_the_connections_it_took() {
    let mut lp = loop_with(true);
    let dir = std::env::temp_dir().join(format!("ringloop-accept-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let path = dir.clone();
    let mut clients = lp.block_on(async move {
        let l = UnixListener::bind(&path).unwrap();
        // Arm the accept, then let three clients in without taking them.
        assert!(time::timeout(Duration::from_millis(5), l.accept())
            .await
            .is_err());
        let clients: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        time::sleep(Duration::from_millis(30)).await;
        drop(l);
        // One turn for the cancel to come back.
        time::sleep(Duration::from_millis(10)).await;
        clients
    });
    lp.close().unwrap();
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        // EOF (or a reset): the server side was closed, not kept forever.
        match c.read(&mut b) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
        }
    }
    let _ = std::fs::remove_file(&dir);
}

/// The backlog given to `ListenOptions` reaches `listen(2)`: a listening TCP socket reports
/// its maximum backlog in `TCP_INFO`'s `tcpi_sacked`.
#[test]
fn listen_options_set_the_backlog() {
    use std::os::fd::AsRawFd;
    let l = ringloop::net::ListenOptions::new()
        .backlog(77)
        .bind_tcp("127.0.0.1:0")
        .unwrap();
    // SAFETY: tcp_info is plain old data; all-zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for the kernel to write; the fd is the listener's.
    let r = unsafe {
        libc::getsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    assert_eq!(info.tcpi_sacked, 77);
    let e = ringloop::net::ListenOptions::new()
        .reuseport(true)
        .bind_unix("/tmp/ringloop-never-bound")
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// A listener dropped on another thread still has its armed accept cancelled by its loop
/// (on the loop's next turn): the port closes instead of staying open until the loop closes.
#[test]
fn listener_dropped_on_another_thread_closes_its_port() {
    loop_with(true).block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // Arm the accept.
        assert!(time::timeout(Duration::from_millis(5), l.accept())
            .await
            .is_err());
        std::thread::spawn(move || drop(l)).join().unwrap();
        // A few turns for the loop to cancel the accept and reap its final CQE.
        time::sleep(Duration::from_millis(50)).await;
        let e = std::net::TcpStream::connect(addr).expect_err("the port was closed");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

/// The same for a stream whose multishot receive is armed: dropped on another thread, its
/// descriptor is closed by the loop and the peer sees end of stream.
#[test]
fn stream_dropped_on_another_thread_is_closed_by_its_loop() {
    use std::io::Read;
    loop_with(true).block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (conn, _) = l.accept().await.unwrap();
        // Arm the receive.
        assert!(time::timeout(Duration::from_millis(5), conn.recv())
            .await
            .is_err());
        std::thread::spawn(move || drop(conn)).join().unwrap();
        time::sleep(Duration::from_millis(50)).await;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(peer.read(&mut b).expect("EOF, not a timeout"), 0);
    });
}

/// `accept_stream` hands over the same connections as `accept`, on both paths, with no
/// address: the stream answers `peer_addr` itself, and carries the peer's bytes.
#[test]
fn accept_stream_takes_connections_without_their_address_on_either_path() {
    use std::io::Write;
    for multishot in [true, false] {
        loop_with(multishot).block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            for i in 0..5u8 {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(&[i]).unwrap();
                let s = l.accept_stream().await.unwrap();
                assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
                let b = s.recv().await.unwrap();
                assert_eq!(
                    &b[..],
                    &[i],
                    "multishot {multishot}: the connection's own bytes"
                );
            }
        });
    }
}

/// `TCP_NODELAY` set on a listener (at bind or later) reaches the connections it accepts, so
/// a server needs no `setsockopt` per connection; without it they keep Nagle's algorithm.
#[test]
fn accepted_streams_inherit_the_listeners_nodelay() {
    use ringloop::net::ListenOptions;
    EventLoop::new().unwrap().block_on(async {
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let at_bind = ListenOptions::new()
            .nodelay(true)
            .bind_tcp("127.0.0.1:0")
            .unwrap();
        let later = TcpListener::bind("127.0.0.1:0").unwrap();
        later.set_nodelay(true).unwrap();
        assert!(!plain.nodelay().unwrap());
        assert!(at_bind.nodelay().unwrap() && later.nodelay().unwrap());
        for (l, want) in [(&plain, false), (&at_bind, true), (&later, true)] {
            let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let s = l.accept_stream().await.unwrap();
            assert_eq!(s.nodelay().unwrap(), want);
        }
    });
}

#[test]
fn nodelay_for_a_unix_listener_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("ringloop-nodelay-{}", std::process::id()));
    let err = ringloop::net::ListenOptions::new()
        .nodelay(true)
        .bind_unix(&path)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("TCP_NODELAY"), "{err}");
    assert!(!path.exists(), "nothing bound");
}
