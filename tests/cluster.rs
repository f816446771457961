//! Thread-per-core Cluster and the echo demo, through the public API and the built example.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, Cluster, Handle};

#[test]
fn two_cores_serve_echo_on_one_port_and_stop_by_handle() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cluster = Cluster::builder()
        .threads(2)
        .handle_signals(false)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let handle = cluster.handle();
    let ready = Arc::new(AtomicUsize::new(0));
    let served_by = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (r, s, a) = (ready.clone(), served_by.clone(), addr.clone());
    let server = std::thread::spawn(move || {
        let t0 = Instant::now();
        let res = cluster.run(move |core| {
            let (r, s, a) = (r.clone(), s.clone(), a.clone());
            async move {
                let l = TcpListener::bind_reuseport(a.as_str()).unwrap();
                r.fetch_add(1, Ordering::SeqCst);
                let stopping = Handle::current().stopping();
                let serve = async move {
                    loop {
                        let (c, _) = l.accept().await.unwrap();
                        s[core].fetch_add(1, Ordering::SeqCst);
                        spawn(async move {
                            loop {
                                let b = c.recv().await.unwrap();
                                if b.is_empty() {
                                    return;
                                }
                                c.write_all(b).await.0.unwrap();
                            }
                        });
                    }
                };
                let mut serve = std::pin::pin!(serve);
                let mut stopping = std::pin::pin!(stopping);
                std::future::poll_fn(|cx| {
                    if serve.as_mut().poll(cx).is_ready() || stopping.as_mut().poll(cx).is_ready() {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
        });
        (res, t0.elapsed())
    });
    while ready.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Many short connections: the kernel spreads them over both listeners.
    let mut lp = ringloop::EventLoop::new().unwrap();
    lp.block_on(async {
        for i in 0..64u32 {
            let c = TcpStream::connect(addr.as_str()).await.unwrap();
            let msg = format!("hello {i}").into_bytes();
            let (r, msg) = c.write_all(msg).await;
            r.unwrap();
            let b = c.recv().await.unwrap();
            assert_eq!(&b[..], &msg[..]);
        }
    });
    let stop_at = Instant::now();
    handle.stop();
    let (res, _) = server.join().unwrap();
    res.unwrap();
    assert!(
        stop_at.elapsed() < Duration::from_secs(2),
        "stopped within the grace period"
    );
    let (a, b) = (
        served_by[0].load(Ordering::SeqCst),
        served_by[1].load(Ordering::SeqCst),
    );
    assert_eq!(a + b, 64);
    assert!(a > 0 && b > 0, "both cores served ({a}, {b})");
}

#[test]
fn a_panicking_core_is_an_error_naming_it_and_stops_the_others() {
    let cluster = Cluster::builder()
        .threads(2)
        .handle_signals(false)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = cluster
        .run(|core| async move {
            if core == 1 {
                ringloop::time::sleep(Duration::from_millis(10)).await;
                panic!("core one gave up");
            }
            // Core 0 would run forever; the panic on core 1 must stop it.
            Handle::current().stopping().await;
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("core 1"), "{msg}");
    assert!(msg.contains("core one gave up"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_core_that_ignores_stop_is_closed_after_the_shutdown_timeout() {
    let cluster = Cluster::builder()
        .threads(1)
        .handle_signals(false)
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let h = cluster.handle();
    let t0 = Instant::now();
    cluster
        .run(move |_| {
            let h = h.clone();
            async move {
                h.stop();
                std::future::pending::<()>().await // never looks at stopping()
            }
        })
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[test]
fn forced_cores_are_named_after_run() {
    let cluster = Cluster::builder()
        .threads(2)
        .handle_signals(false)
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let h = cluster.handle();
    let handle = h.clone();
    cluster
        .run(move |core| {
            let h = h.clone();
            async move {
                h.stop();
                if core == 1 {
                    std::future::pending::<()>().await; // never looks at stopping()
                }
                Handle::current().stopping().await;
            }
        })
        .unwrap();
    assert_eq!(
        handle.forced_cores(),
        [1],
        "core 0 returned, core 1 was forced"
    );
}

#[test]
fn a_core_returning_an_error_stops_the_cluster_and_run_returns_it() {
    let cluster = Cluster::builder()
        .threads(2)
        .handle_signals(false)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = cluster
        .run(|core| async move {
            if core == 0 {
                // As a server whose listener cannot bind.
                let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
                ringloop::net::TcpListener::bind(busy.local_addr()?)?;
                return Ok(());
            }
            // Core 1 would run forever; core 0's error must stop it.
            Handle::current().stopping().await;
            Ok::<(), std::io::Error>(())
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("core 0 failed"), "{msg}");
    assert!(msg.to_lowercase().contains("address"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn zero_threads_is_invalid_input() {
    let e = Cluster::builder().threads(0).build().err().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

/// The built example `name`. `cargo test` builds examples; a filtered run may not, so build
/// it then with the cargo that runs this test.
/// Every core's loop is built from the cluster's loop settings: here a receive pool of
/// 2 KiB buffers (the default is 64 KiB), which each core sees in the buffer it receives.
#[test]
fn loop_settings_apply_to_every_core() {
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sizes.clone();
    Cluster::builder()
        .threads(2)
        .handle_signals(false)
        .event_loop(ringloop::EventLoop::builder().recv_buffers(64, 2048))
        .build()
        .unwrap()
        .run(move |_| {
            let seen = seen.clone();
            async move {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
                let (s, _) = l.accept().await.unwrap();
                c.write_all(&b"hello"[..]).await.0.unwrap();
                let got = s.recv().await.unwrap();
                assert_eq!(&got[..], b"hello");
                seen.lock()
                    .unwrap()
                    .push(ringloop::IoBuf::bytes_total(&got));
            }
        })
        .unwrap();
    assert_eq!(*sizes.lock().unwrap(), [2048, 2048]);
}

/// Loop settings the loop would refuse fail the cluster's `build`, before any thread runs.
#[test]
fn bad_loop_settings_fail_the_cluster_build() {
    let e = Cluster::builder()
        .event_loop(ringloop::EventLoop::builder().entries(0))
        .build()
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("Builder::entries(0)"), "{e}");
}

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    p.pop();
    let path = p.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "--example", name])
            .status()
            .unwrap();
        assert!(status.success(), "building example {name}");
    }
    path
}

#[test]
fn echo_demo_echoes_and_exits_zero_on_sigterm_with_connections_open() {
    let mut server = Command::new(example("echo_server"))
        .args(["--addr", "127.0.0.1:0", "--threads", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the echo_server example is built by cargo test");
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    let mut conns = Vec::new();
    for i in 0..4 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = format!("demo {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
        conns.push(c); // stays open across the shutdown
    }
    // SAFETY: kill with the child's pid and a valid signal number.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(rest.contains("4 connection(s)"), "{rest}");
    drop(conns);
}

#[test]
fn echo_demo_busy_address_is_a_one_line_error_naming_it() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = Command::new(example("echo_server"))
        .args(["--addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_cluster_handle_reads_every_cores_stats() {
    let cluster = Cluster::builder()
        .threads(2)
        .handle_signals(false)
        .build()
        .unwrap();
    let h = cluster.handle();
    let reader = {
        let h = h.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let stats = h.stats();
            h.stop();
            stats
        })
    };
    cluster
        .run(|_| async {
            Handle::current().stopping().await;
        })
        .unwrap();
    let stats = reader.join().unwrap();
    assert_eq!(stats.len(), 2, "one per core");
    assert!(stats.iter().all(|s| s.tasks >= 1), "{stats:?}");
}

const SECOND_SIGNAL_CHILD: &str = "RINGLOOP_TEST_SECOND_SIGNAL_CHILD";

/// The child of `a_second_sigterm_ends_the_grace_period`: a cluster whose core ignores the
/// stop, with a grace period far longer than the test waits.
#[test]
fn second_signal_child() {
    if std::env::var(SECOND_SIGNAL_CHILD).is_err() {
        return;
    }
    let cluster = Cluster::builder()
        .threads(1)
        .shutdown_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let h = cluster.handle();
    cluster
        .run(|_| async {
            println!("READY");
            std::future::pending::<()>().await // never looks at stopping()
        })
        .unwrap();
    println!("FORCED {:?}", h.forced_cores());
    std::process::exit(0);
}

#[test]
fn a_second_sigterm_ends_the_grace_period() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "second_signal_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SECOND_SIGNAL_CHILD, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
    }
    let pid = child.id() as i32;
    let term = || {
        // SAFETY: kill(2) of our child's pid with a valid signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    };
    term();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "one SIGTERM leaves the core its grace period"
    );
    let t0 = Instant::now();
    term();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the second SIGTERM did not end it"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{status:?} {rest}");
    assert!(rest.contains("FORCED [0]"), "{rest}");
}
