//! Networking through the public API, over loopback.

use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use ringloop::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use ringloop::{spawn, time, EventLoop};

mod common;

fn run<F: std::future::Future>(f: F) -> F::Output {
    EventLoop::new().unwrap().block_on(f)
}

/// Serves one connection: echoes until EOF, then shuts down its write half.
async fn echo_tcp(conn: TcpStream) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let (r, b) = conn.read(buf).await;
        let n = r.unwrap();
        if n == 0 {
            conn.shutdown(Shutdown::Write).await.unwrap();
            return;
        }
        let (r, b) = conn.write_all(b).await;
        r.unwrap();
        buf = b;
    }
}

#[test]
fn tcp_echo_round_trip() {
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        spawn(async move {
            let (c, peer) = l.accept().await.unwrap();
            assert_eq!(peer, c.peer_addr().unwrap());
            echo_tcp(c).await;
        });
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        let (r, _) = s.write_all(b"hello ring").await;
        r.unwrap();
        let (r, buf) = s.read(Vec::with_capacity(64)).await;
        assert_eq!(r.unwrap(), 10);
        assert_eq!(buf, b"hello ring");
    });
}

#[test]
fn eight_mib_both_ways_byte_exact() {
    const LEN: usize = 8 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    let expected = data.clone();
    run(async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        spawn(async move { echo_tcp(l.accept().await.unwrap().0).await });
        let s = std::rc::Rc::new(TcpStream::connect(addr).await.unwrap());
        let w = s.clone();
        let writer = spawn(async move {
            let (r, _) = w.write_all(data).await;
            r.unwrap();
            w.shutdown(Shutdown::Write).await.unwrap();
        });
        let mut got = Vec::with_capacity(LEN);
        let mut buf = Vec::with_capacity(256 * 1024);
        loop {
            let (r, b) = s.read(buf).await;
            if r.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&b);
            buf = b;
        }
        writer.await.unwrap();
        assert_eq!(got.len(), LEN);
        assert!(got == expected, "echoed bytes differ");
    });
}

#[test]
fn eof_is_ok_zero_and_half_close_is_seen_by_peer() {
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            // The client shut its write half: we read EOF, yet can still write back.
            let (r, _) = c.read(Vec::with_capacity(8)).await;
            assert_eq!(r.unwrap(), 0, "EOF is Ok(0)");
            let (r, _) = c.write_all(b"still open").await;
            r.unwrap();
        });
        let s = TcpStream::connect(addr).await.unwrap();
        s.shutdown(Shutdown::Write).await.unwrap();
        let (r, buf) = s.read(Vec::with_capacity(32)).await;
        assert_eq!(r.unwrap(), 10);
        assert_eq!(buf, b"still open");
        server.await.unwrap();
        let (r, _) = s.read(Vec::with_capacity(8)).await;
        assert_eq!(r.unwrap(), 0);
    });
}

#[test]
fn connection_refused_names_the_address() {
    // Bind then drop to find a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = run(TcpStream::connect(addr)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[test]
fn addr_in_use_without_reuseport_and_sharing_with_it() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = a.local_addr().unwrap();
    let e = TcpListener::bind(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&addr.to_string()), "{e}");

    let b = TcpListener::bind_reuseport("127.0.0.1:0").unwrap();
    let addr = b.local_addr().unwrap();
    let c = TcpListener::bind_reuseport(addr).unwrap();
    assert_eq!(c.local_addr().unwrap(), addr);
}

#[test]
fn bad_address_is_a_clear_error() {
    let e = TcpListener::bind("not-an-address").unwrap_err();
    assert!(e.to_string().contains("bind"), "{e}");
}

#[test]
fn five_hundred_connections_twenty_messages_each() {
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        spawn(async move {
            loop {
                let (c, _) = l.accept().await.unwrap();
                spawn(echo_tcp(c));
            }
        });
        let clients: Vec<_> = (0..500u32)
            .map(|i| {
                spawn(async move {
                    let s = TcpStream::connect(addr).await.unwrap();
                    for j in 0..20u32 {
                        let msg = format!("client {i} message {j}").into_bytes();
                        let (r, msg) = s.write_all(msg).await;
                        r.unwrap();
                        let mut got = Vec::new();
                        while got.len() < msg.len() {
                            let (r, b) = s.read(Vec::with_capacity(64)).await;
                            assert!(r.unwrap() > 0);
                            got.extend_from_slice(&b);
                        }
                        assert_eq!(got, msg);
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
    });
}

#[test]
fn buffers_come_back_with_the_same_allocation() {
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        spawn(async move { echo_tcp(l.accept().await.unwrap().0).await });
        let s = TcpStream::connect(addr).await.unwrap();
        let out = b"abcdef".to_vec();
        let out_ptr = out.as_ptr();
        let (r, out) = s.write(out).await;
        assert_eq!(r.unwrap(), 6);
        assert_eq!(out.as_ptr(), out_ptr);
        let inbuf = Vec::with_capacity(128);
        let in_ptr = inbuf.as_ptr();
        let (r, inbuf) = s.read(inbuf).await;
        assert_eq!(r.unwrap(), 6);
        assert_eq!(inbuf.as_ptr(), in_ptr);
        assert_eq!(inbuf.capacity(), 128);
    });
}

#[test]
fn accept_is_cancel_safe() {
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // An accept that times out with no client.
        assert!(time::timeout(Duration::from_millis(10), l.accept())
            .await
            .is_err());
        // Start an accept, let a client connect, and drop the accept future before it is
        // polled again: the connection must not be lost.
        let client = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            std::net::TcpStream::connect(addr).unwrap()
        });
        let r = time::timeout(Duration::from_millis(1), l.accept()).await;
        assert!(r.is_err());
        let mut c = client.join().unwrap();
        time::sleep(Duration::from_millis(20)).await;
        let (conn, peer) = time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("the connection was kept for the next accept")
            .unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        use std::io::Write;
        c.write_all(b"kept").unwrap();
        let (r, buf) = conn.read(Vec::with_capacity(8)).await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(buf, b"kept");
    });
}

#[test]
fn from_std_listener_works_on_the_ring() {
    let std_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_l.set_nonblocking(true).unwrap();
    let addr = std_l.local_addr().unwrap();
    let l = TcpListener::from_std(std_l).unwrap();
    run(async move {
        let c = spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (_s, peer) = l.accept().await.unwrap();
        let c = c.await.unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
    });
}

#[test]
fn udp_round_trip() {
    run(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b_addr: SocketAddr = b.local_addr().unwrap();
        let (r, _) = a.send_to(b"datagram", b_addr).await;
        assert_eq!(r.unwrap(), 8);
        let (r, buf) = b.recv_from(Vec::with_capacity(64)).await;
        let (n, from) = r.unwrap();
        assert_eq!(n, 8);
        assert_eq!(&buf[..], b"datagram");
        assert_eq!(from, a.local_addr().unwrap());
    });
}

#[test]
fn unix_echo_round_trip() {
    let dir = std::env::temp_dir().join(format!("ringloop-unix-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("echo.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    let p2 = path.clone();
    run(async move {
        spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            let (r, b) = c.read(Vec::with_capacity(64)).await;
            r.unwrap();
            let (r, _) = c.write_all(b).await;
            r.unwrap();
        });
        let s = UnixStream::connect(&p2).await.unwrap();
        assert_eq!(s.peer_addr().unwrap().as_pathname(), Some(p2.as_path()));
        let (r, _) = s.write_all("over unix").await;
        r.unwrap();
        let (r, buf) = s.read(Vec::with_capacity(64)).await;
        assert_eq!(r.unwrap(), 9);
        assert_eq!(buf, b"over unix");
    });
    let e = run(UnixStream::connect(dir.join("missing.sock"))).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("missing.sock"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn io_futures_are_send_so_handle_spawn_can_take_them() {
    fn assert_send<T: Send>(_: &T) {}
    let s = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap();
    let f = async move {
        let c = TcpStream::connect(addr).await.unwrap();
        let (r, _) = c.write_all(vec![1u8; 4]).await;
        r.unwrap();
        time::sleep(Duration::from_millis(1)).await;
    };
    assert_send(&f);
    let mut lp = EventLoop::new().unwrap();
    let h = lp.handle();
    let jh = std::thread::spawn(move || h.spawn(f)).join().unwrap();
    lp.block_on(async move {
        let (_c, _) = s.accept().await.unwrap();
        jh.await.unwrap();
    });
}

#[test]
fn accept_completed_then_dropped_before_repoll_keeps_the_connection() {
    use std::future::Future;
    use std::task::Poll;
    run(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // 1. Submit an accept by polling its future once.
        let mut acc = Box::pin(l.accept());
        std::future::poll_fn(|cx| {
            assert!(acc.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        // 2. A client connects; the loop reaps the accept's CQE while we sleep, without
        //    polling the accept future again.
        let client = std::net::TcpStream::connect(addr).unwrap();
        time::sleep(Duration::from_millis(30)).await;
        // 3. Drop the future that never saw its connection.
        drop(acc);
        // 4. The next accept returns that connection.
        let (_conn, peer) = time::timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("the completed connection was stashed, not lost")
            .unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    });
}

#[test]
fn send_zc_writes_are_byte_exact_and_give_the_buffer_back() {
    const LEN: usize = 8 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 13 % 251) as u8).collect();
    let expected = data.clone();
    let mut lp = EventLoop::builder()
        .send_zerocopy_threshold(Some(0)) // every write zero-copy
        .build()
        .unwrap();
    lp.block_on(async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        spawn(async move { echo_tcp(l.accept().await.unwrap().0).await });
        let s = std::rc::Rc::new(TcpStream::connect(addr).await.unwrap());
        let small = b"zc".to_vec();
        let ptr = small.as_ptr();
        let (r, small) = s.write(small).await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(
            small.as_ptr(),
            ptr,
            "same allocation back after the notification"
        );
        let (r, b) = s.read(Vec::with_capacity(8)).await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(b, b"zc");
        let w = s.clone();
        let writer = spawn(async move {
            let (r, _) = w.write_all(data).await;
            r.unwrap();
            w.shutdown(Shutdown::Write).await.unwrap();
        });
        let mut got = Vec::with_capacity(LEN);
        loop {
            let (r, b) = s.read(Vec::with_capacity(256 * 1024)).await;
            if r.unwrap() == 0 {
                break;
            }
            got.extend_from_slice(&b);
        }
        writer.await.unwrap();
        assert!(got == expected, "bytes differ");
    });
}

#[test]
fn send_zc_write_dropped_mid_flight_keeps_its_buffer_until_the_notification() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    struct Counted(Vec<u8>, Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    // SAFETY: delegates to the Vec, whose heap block does not move.
    unsafe impl ringloop::IoBuf for Counted {
        fn stable_ptr(&self) -> *const u8 {
            self.0.as_ptr()
        }
        fn bytes_init(&self) -> usize {
            self.0.len()
        }
        fn bytes_total(&self) -> usize {
            self.0.capacity()
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let mut lp = EventLoop::builder()
        .send_zerocopy_threshold(Some(0))
        .build()
        .unwrap();
    let d = drops.clone();
    lp.block_on(async move {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s = TcpStream::connect(addr).await.unwrap();
        let (peer, _) = l.accept().await.unwrap();
        // The listener's armed accept is cancelled now, not counted below.
        drop(l);
        // 32 MiB to a peer that does not read: the write cannot finish; drop it.
        let big = Counted(vec![1u8; 32 << 20], d.clone());
        let r = time::timeout(Duration::from_millis(50), s.write_all(big)).await;
        assert!(r.is_err());
        drop(s);
        drop(peer);
        for _ in 0..100 {
            if d.load(Ordering::SeqCst) == 1 {
                break;
            }
            time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "freed once, after the kernel let go"
    );
    assert_eq!(
        lp.stats().ops_in_kernel,
        1,
        "only the doorbell read remains"
    );
}

/// Small socket buffers make the kernel take only part of a large send: `write` reports that
/// short count, and `write_all` gets every byte across, in order (the kernel resumes its
/// send as room frees up; before Linux 5.19, `write_all` resumes it from where it stopped).
#[test]
fn write_all_resumes_after_short_sends() {
    const LEN: usize = 1 << 20;
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 % 253) as u8).collect();
    let expected = data.clone();
    let dir = std::env::temp_dir().join(format!("ringloop-short-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("short.sock");
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    run(async move {
        let s = std::rc::Rc::new(UnixStream::connect(&path).await.unwrap());
        let (peer, _) = l.accept().await.unwrap();
        for fd in [s.as_raw_fd(), peer.as_raw_fd()] {
            // SAFETY: both sockets are alive for these calls.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let sock = socket2::SockRef::from(&fd);
            sock.set_send_buffer_size(4096).unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
        }
        let reader = spawn(async move {
            let mut got = Vec::new();
            loop {
                let (r, b) = peer.read(Vec::with_capacity(64 * 1024)).await;
                if r.unwrap() == 0 {
                    return got;
                }
                got.extend_from_slice(&b);
            }
        });
        let mut sent = Vec::with_capacity(2 * LEN);
        let (r, _) = s.write(data.clone()).await;
        let first = r.unwrap();
        assert!(
            first > 0 && first < LEN,
            "one send took {first} of {LEN} bytes"
        );
        sent.extend_from_slice(&data[..first]);
        let (r, _) = s.write_all(data).await;
        r.unwrap();
        sent.extend_from_slice(&expected);
        s.shutdown(Shutdown::Write).await.unwrap();
        let received = reader.await.unwrap();
        assert_eq!(received.len(), sent.len());
        assert!(
            received == sent,
            "bytes arrive in order, none lost or repeated"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `write_all` that the socket takes only in parts (a slow reader, a small send buffer) is
/// one send: the kernel sends each part as room frees up, and the loop reaps one completion
/// for the whole, not one per part (Linux 5.19+).
#[test]
fn write_all_to_a_slow_reader_is_one_completion() {
    let Some((reaped, parts)) = common::completions_for_a_slow_reader(4 << 20, |s, data| async {
        let (r, _) = s.write_all(data).await;
        r.unwrap();
        s
    }) else {
        eprintln!("skipped: this kernel posts a completion per part of a send");
        return;
    };
    assert_eq!(
        reaped, 1,
        "one completion for a write the socket took in about {parts} parts"
    );
}

#[test]
fn sockets_take_options_through_socket2_and_streams_come_from_std() {
    use socket2::SockRef;
    EventLoop::new().unwrap().block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        SockRef::from(&l).set_reuse_address(true).unwrap();
        let addr = l.local_addr().unwrap();
        let std_client = std::net::TcpStream::connect(addr).unwrap();
        let client = TcpStream::from_std(std_client).unwrap();
        let (server, _) = l.accept().await.unwrap();
        // Options through socket2, on a borrowed descriptor, no unsafe.
        SockRef::from(&server).set_keepalive(true).unwrap();
        assert!(SockRef::from(&server).keepalive().unwrap());
        SockRef::from(&client)
            .set_send_buffer_size(64 * 1024)
            .unwrap();
        // The adopted stream works on the ring.
        let (r, _) = client.write_all(&b"adopted"[..]).await;
        r.unwrap();
        let got = server.recv().await.unwrap();
        assert_eq!(&got[..], b"adopted");
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (a, b) = (
            UnixStream::from_std(a).unwrap(),
            UnixStream::from_std(b).unwrap(),
        );
        let (r, _) = a.write_all(&b"pair"[..]).await;
        r.unwrap();
        assert_eq!(&b.recv().await.unwrap()[..], b"pair");
    });
}

#[test]
fn a_connected_udp_socket_sends_and_receives_with_its_peer() {
    EventLoop::new().unwrap().block_on(async {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::from_std(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        assert_eq!(a.peer_addr().unwrap(), b.local_addr().unwrap());
        let (r, _) = a.send(&b"ping"[..]).await;
        assert_eq!(r.unwrap(), 4);
        let (r, buf) = b.recv(Vec::with_capacity(64)).await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(buf, b"ping");
        // A datagram from another address is not delivered to a connected socket.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (r, _) = stranger
            .send_to(&b"noise"[..], b.local_addr().unwrap())
            .await;
        r.unwrap();
        let (r, _) = a.send(&b"pong"[..]).await;
        r.unwrap();
        let (r, buf) = b.recv(Vec::with_capacity(64)).await;
        assert_eq!(r.unwrap(), 4);
        assert_eq!(buf, b"pong");
        // Options.
        a.set_broadcast(true).unwrap();
        a.set_multicast_loop_v4(false).unwrap();
        a.set_multicast_ttl_v4(2).unwrap();
        // Unconnected: send has no peer.
        let lone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (r, _) = lone.send(&b"x"[..]).await;
        let e = r.unwrap_err();
        assert!(
            matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN) | Some(libc::EDESTADDRREQ)
            ),
            "{e}"
        );
    });
}
