//! hyper and axum on ringloop (feature `hyper`): HTTP/1.1 and HTTP/2 served by hyper-util's
//! `auto` builder on ringloop streams and requested by hyper's client on ringloop too, with
//! the loop's executor and timer.

use std::cell::Cell;
use std::convert::Infallible;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::conn::auto;
use ringloop::compat::{HyperExecutor, HyperTimer};
use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, time, EventLoop};

/// Held by every test here: one of them counts the process's descriptors, which the others'
/// would move.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// The test service: `GET /` says hello, `POST /echo` streams the body back, `GET /bytes/N`
/// returns N bytes.
async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let full = |b: Bytes| Full::new(b).map_err(|never| match never {}).boxed();
    let path = req.uri().path().to_owned();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/") => Response::new(full(Bytes::from_static(b"Hello, World!"))),
        (&Method::POST, "/echo") => Response::new(req.into_body().boxed()),
        (&Method::GET, p) if p.starts_with("/bytes/") => match p[7..].parse::<usize>() {
            Ok(n) => Response::new(full(Bytes::from(vec![b'x'; n]))),
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        _ => status(StatusCode::NOT_FOUND),
    })
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r
}

/// Connections being served by [`serve`].
#[derive(Clone, Default)]
struct Live(Rc<Cell<usize>>);

/// Serves `route` on `listener` until the loop ends: HTTP/1.1 and HTTP/2 (prior knowledge)
/// on one port, with a header-read timeout of `header_timeout`.
fn serve(listener: TcpListener, header_timeout: Duration) -> Live {
    let live = Live::default();
    let count = live.clone();
    spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            count.0.set(count.0.get() + 1);
            spawn(async move {
                let mut builder = auto::Builder::new(HyperExecutor);
                builder
                    .http1()
                    .timer(HyperTimer)
                    .header_read_timeout(header_timeout);
                builder.http2().timer(HyperTimer);
                let _ = builder
                    .serve_connection(conn, hyper::service::service_fn(route))
                    .await;
                count.0.set(count.0.get() - 1);
            });
        }
    });
    live
}

async fn server() -> (std::net::SocketAddr, Live) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve(listener, Duration::from_secs(10)))
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn body_of(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

#[test]
fn http1_keep_alive_serves_one_hyper_client_many_requests() {
    let _serial = serial();
    EventLoop::new().unwrap().block_on(async {
        let (addr, _) = server().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        spawn(conn);
        for i in 0..20 {
            let resp = sender.send_request(get("/")).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(body_of(resp).await, "Hello, World!");
            let n = 1 + i * 5_000;
            let resp = sender
                .send_request(get(&format!("/bytes/{n}")))
                .await
                .unwrap();
            assert_eq!(body_of(resp).await.len(), n);
        }
        // A body of 4 MiB streamed back on the same connection.
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 253) as u8).collect();
        let req = Request::post("/echo")
            .header("host", "test")
            .body(Full::new(Bytes::from(big.clone())))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert!(body_of(resp).await == big, "the echoed body differs");
    });
}

#[test]
fn http2_serves_100_concurrent_streams_on_one_connection() {
    let _serial = serial();
    EventLoop::new().unwrap().block_on(async {
        let (addr, _) = server().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::Builder::new(HyperExecutor)
            .timer(HyperTimer)
            .handshake(stream)
            .await
            .unwrap();
        spawn(conn);
        let requests = (0..100).map(|i| {
            let mut sender = sender.clone();
            async move {
                let body = format!("stream {i} ").repeat(i * 50 + 1);
                let req = Request::post("/echo")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.version(), hyper::Version::HTTP_2);
                assert_eq!(body_of(resp).await, body, "stream {i}");
            }
        });
        futures::future::join_all(requests).await;
    });
}

#[test]
fn an_axum_router_runs_through_hyper_util() {
    let _serial = serial();
    use axum::routing::{get as axum_get, post};
    EventLoop::new().unwrap().block_on(async {
        let router = axum::Router::new()
            .route("/", axum_get(|| async { "axum on ringloop" }))
            .route(
                "/sum",
                post(|body: String| async move {
                    body.split(',')
                        .map(|n| n.trim().parse::<u64>().unwrap_or(0))
                        .sum::<u64>()
                        .to_string()
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let svc = hyper_util::service::TowerToHyperService::new(router.clone());
                spawn(async move {
                    let mut builder = auto::Builder::new(HyperExecutor);
                    builder.http1().timer(HyperTimer);
                    let _ = builder.serve_connection(conn, svc).await;
                });
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        spawn(conn);
        let resp = sender.send_request(get("/")).await.unwrap();
        assert_eq!(body_of(resp).await, "axum on ringloop");
        let req = Request::post("/sum")
            .header("host", "test")
            .body(Full::new(Bytes::from_static(b"1, 2, 39")))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(body_of(resp).await, "42");
        let resp = sender.send_request(get("/nowhere")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    });
}

/// Sends `raw` on a new connection and reads until the server closes it (or 5 s pass).
async fn raw_exchange(addr: std::net::SocketAddr, raw: &'static [u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, _) = s.write_all(raw).await;
    r.unwrap();
    let mut got = Vec::new();
    loop {
        let b = time::timeout(Duration::from_secs(5), s.recv())
            .await
            .expect("the server neither answered nor closed")
            .unwrap();
        if b.is_empty() {
            return got;
        }
        got.extend_from_slice(&b);
    }
}

#[test]
fn a_malformed_request_gets_400_and_the_server_keeps_serving() {
    let _serial = serial();
    EventLoop::new().unwrap().block_on(async {
        let (addr, _) = server().await;
        let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nbad header line\r\n\r\n").await;
        assert!(
            reply.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
        let reply = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(reply.starts_with(b"HTTP/1.1 200"));
        assert!(reply.ends_with(b"Hello, World!"));
    });
}

#[test]
fn a_client_that_sends_no_complete_header_is_dropped_by_the_timer() {
    let _serial = serial();
    EventLoop::new().unwrap().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        serve(listener, Duration::from_millis(300));
        let start = Instant::now();
        let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\n").await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "dropped after {waited:?}; the header-read timeout is 300 ms"
        );
        // hyper answers 408 or just closes; either way no 200.
        assert!(!reply.starts_with(b"HTTP/1.1 200"));
    });
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn ten_thousand_connections_opened_and_dropped_leave_the_fd_count_unchanged() {
    let _serial = serial();
    EventLoop::new().unwrap().block_on(async {
        let (addr, live) = server().await;
        // One request first, so that every lazily made descriptor (the loop's room watcher,
        // say) exists before counting.
        let warm = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        assert!(warm.await.starts_with(b"HTTP/1.1 200"));
        let settled = Instant::now() + Duration::from_secs(5);
        while live.0.get() > 0 && Instant::now() < settled {
            time::sleep(Duration::from_millis(10)).await;
        }
        // Closed descriptors go back with the loop's next enter.
        time::sleep(Duration::from_millis(50)).await;
        let before = open_fds();
        for batch in 0..100 {
            let conns = (0..100).map(|i| async move {
                let s = TcpStream::connect(addr).await.unwrap();
                // A third send a request and drop the connection without reading the
                // reply; a third send half a request; the rest send nothing.
                match (batch + i) % 3 {
                    0 => drop(s.write_all(&b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..]).await),
                    1 => drop(s.write_all(&b"GET / HT"[..]).await),
                    _ => {}
                }
            });
            futures::future::join_all(conns).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while live.0.get() > 0 && Instant::now() < deadline {
            time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            live.0.get(),
            0,
            "connections still served after their peers left"
        );
        // Closed descriptors go back with the loop's next enter.
        time::sleep(Duration::from_millis(50)).await;
        assert_eq!(open_fds(), before, "descriptors leaked");
    });
}

const FD_CHILD_ENV: &str = "RINGLOOP_TEST_HTTP_FD_CHILD";

/// The child of [`out_of_descriptors_the_http_server_keeps_serving`]: the test service with
/// 64 descriptors at most.
#[test]
fn http_server_with_few_descriptors_child() {
    if std::env::var(FD_CHILD_ENV).is_err() {
        return;
    }
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: a valid rlimit for the duration of the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    EventLoop::new().unwrap().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        println!("PORT:{}", listener.local_addr().unwrap().port());
        serve(listener, Duration::from_secs(10));
        std::future::pending::<()>().await;
    });
}

#[test]
fn out_of_descriptors_the_http_server_keeps_serving() {
    use std::io::{BufRead, BufReader, Read, Write};
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "http_server_with_few_descriptors_child",
            "--nocapture",
        ])
        .env(FD_CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("the child printed its port").unwrap();
        if let Some(p) = line.strip_prefix("PORT:") {
            break p.trim().parse().unwrap();
        }
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let get = |conn: &mut std::net::TcpStream| -> Vec<u8> {
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
        reply
    };
    // More connections than the server has descriptors: the kernel completes them all, the
    // server's accepts fail with EMFILE past its limit.
    let idle: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server died out of descriptors"
    );
    // Freed: the server accepts again (after its back-off) and answers.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = get(&mut std::net::TcpStream::connect(addr).unwrap());
        if reply.starts_with(b"HTTP/1.1 200") || Instant::now() > deadline {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "after running out of descriptors the server answered {:?}",
        String::from_utf8_lossy(&reply)
    );
}
