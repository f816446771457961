//! The servers written on the ecosystem's traits, one thread each (built with the `compat`
//! feature, apart from `bench-echo`, so that ringloop's own servers there are built as users
//! build ringloop by default):
//! - `ringloop-compat`: the tokio echo server's code (an 8 KiB read buffer, `read` then
//!   `write_all` through tokio's traits) on ringloop streams: what the compat layer costs
//!   against ringloop's native echo;
//! - `hyper-ringloop` and `hyper-tokio`: one hyper HTTP/1.1 service (`GET` answers
//!   `Hello, World!`), served on ringloop through the `hyper` feature and on tokio's
//!   `current_thread` runtime, each with its runtime's timer.
//!
//! Prints `listening ADDR` once bound, then serves until killed.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use ringloop_bench::{pin, raise_nofile, Args};

const USAGE: &str = "usage: bench-compat --server ringloop-compat|hyper-ringloop|hyper-tokio [--addr IP:PORT] [--cpu N] [--exit-after CONNS]";

/// `--exit-after N`: exit (cleanly, so that callgrind writes its output) once N connections
/// have closed, as `bench-echo` does.
static EXIT_AFTER: AtomicUsize = AtomicUsize::new(0);
static CLOSED: AtomicUsize = AtomicUsize::new(0);

fn conn_closed() {
    let n = CLOSED.fetch_add(1, Ordering::Relaxed) + 1;
    if n == EXIT_AFTER.load(Ordering::Relaxed) {
        std::process::exit(0);
    }
}

/// The read buffer of the trait echo: 8 KiB, as the tokio echo server's.
const READ_BUF: usize = 8 * 1024;

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// The echo on tokio's traits, over any stream that has them.
async fn trait_echo<S>(mut conn: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match AsyncReadExt::read(&mut conn, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if AsyncWriteExt::write_all(&mut conn, &buf[..n])
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The HTTP service both runtimes serve.
async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"Hello, World!",
    ))))
}

/// hyper's HTTP/1 connection settings, the same on both runtimes: keep-alive (the default),
/// and replies to pipelined requests written together.
fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.pipeline_flush(true);
    b
}

/// Runs `serve` on a ringloop loop with a listener on `addr` (TCP_NODELAY inherited).
fn on_ringloop<F, Fut>(addr: SocketAddr, serve: F)
where
    F: Fn(ringloop::net::TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut lp = ringloop::EventLoop::new().expect("ringloop needs io_uring");
    lp.block_on(async move {
        let l = ringloop::net::ListenOptions::new()
            .nodelay(true)
            .bind_tcp(addr)
            .unwrap();
        announce(l.local_addr().unwrap());
        loop {
            let Ok(conn) = l.accept_stream().await else {
                continue;
            };
            let served = serve(conn);
            drop(ringloop::spawn(async move {
                served.await;
                conn_closed();
            }));
        }
    });
}

fn hyper_tokio(addr: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        announce(l.local_addr().unwrap());
        loop {
            let Ok((conn, _)) = l.accept().await else {
                continue;
            };
            let _ = conn.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(conn),
                        hyper::service::service_fn(hello),
                    )
                    .await;
                conn_closed();
            });
        }
    });
}

fn main() {
    let args = Args::parse(USAGE, &["server", "addr", "cpu", "exit-after"]);
    EXIT_AFTER.store(args.get("exit-after", 0), Ordering::Relaxed);
    raise_nofile();
    if let Some(cpu) = args.str("cpu") {
        pin(cpu.parse().expect("--cpu N"));
    }
    let addr: SocketAddr = args.get("addr", "127.0.0.1:0".parse().unwrap());
    match args.str("server").unwrap_or("") {
        "ringloop-compat" => on_ringloop(addr, trait_echo),
        "hyper-ringloop" => on_ringloop(addr, |conn| async move {
            let _ = http1()
                .timer(ringloop::compat::HyperTimer)
                .serve_connection(conn, hyper::service::service_fn(hello))
                .await;
        }),
        "hyper-tokio" => hyper_tokio(addr),
        other => {
            eprintln!(
                "bench-compat: --server ringloop-compat|hyper-ringloop|hyper-tokio (got {other:?})"
            );
            std::process::exit(2);
        }
    }
}
