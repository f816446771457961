//! An HTTP server on ringloop: hyper 1.x through the `hyper` feature, one loop per core.
//!
//! ```sh
//! cargo run --release --features hyper --example http_server -- --addr 127.0.0.1:8080
//! curl http://127.0.0.1:8080/                              # Hello, World!
//! curl --data-binary @Cargo.toml http://127.0.0.1:8080/echo
//! curl --http2-prior-knowledge http://127.0.0.1:8080/bytes/100000 | wc -c
//! ```
//!
//! HTTP/1.1 with keep-alive and HTTP/2 in cleartext share one port (hyper-util's `auto`
//! builder tells them apart by the first bytes). Routes: `GET /` says `Hello, World!`;
//! `POST /echo` streams the request body back; `GET /bytes/N` sends N bytes (up to 1 GiB).
//! A client that sends no complete header within 10 s is dropped. SIGINT/SIGTERM stop
//! accepting, let requests in flight finish (within the cluster's shutdown timeout, 5 s),
//! and exit 0 with a one-line summary.

mod common;

use std::cell::Cell;
use std::convert::Infallible;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::Listeners;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use ringloop::compat::{HyperExecutor, HyperTimer};
use ringloop::net::TcpListener;
use ringloop::{Cluster, Handle, JoinSet};

/// A client must send a whole request header within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest `/bytes/N` served.
const MAX_BYTES: u64 = 1 << 30;

struct Args {
    addr: String,
    threads: Option<usize>,
}

fn usage() -> ExitCode {
    eprintln!("usage: http_server [--addr HOST:PORT] [--threads N]  (default 127.0.0.1:8080, one thread per core)");
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, ExitCode> {
    let mut args = Args {
        addr: "127.0.0.1:8080".to_owned(),
        threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => args.addr = it.next().ok_or_else(usage)?,
            "--threads" => {
                let v = it.next().ok_or_else(usage)?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => args.threads = Some(n),
                    _ => {
                        eprintln!("http_server: --threads needs a positive number, got {v:?}");
                        return Err(ExitCode::from(2));
                    }
                }
            }
            "-h" | "--help" => return Err(usage()),
            other => {
                eprintln!("http_server: unknown argument {other:?}");
                return Err(usage());
            }
        }
    }
    Ok(args)
}

type ResponseBody = BoxBody<Bytes, hyper::Error>;

/// The routes. Counts each request in `served`.
async fn route(
    req: Request<Incoming>,
    served: Rc<Cell<u64>>,
) -> Result<Response<ResponseBody>, Infallible> {
    served.set(served.get() + 1);
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => {
            let mut r = Response::new(full(Bytes::from_static(b"Hello, World!")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            r
        }
        (&Method::POST, "/echo") => Response::new(req.into_body().boxed()),
        (&Method::GET, path) if path.starts_with("/bytes/") => {
            match path["/bytes/".len()..].parse::<u64>() {
                Ok(n) if n <= MAX_BYTES => Response::new(Repeat { left: n }.boxed()),
                _ => status(
                    StatusCode::BAD_REQUEST,
                    "N must be a number up to 1073741824\n",
                ),
            }
        }
        _ => status(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(resp)
}

fn full(b: Bytes) -> ResponseBody {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn status(code: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut r = Response::new(full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r
}

/// `left` bytes of `x`, sent 64 KiB at a time from one static block: no allocation per
/// response, whatever its size.
struct Repeat {
    left: u64,
}

static BLOCK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl Body for Repeat {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(BLOCK.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&BLOCK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// One core's server: accepts until the cluster stops, then shuts its connections down
/// gracefully (HTTP/1 finishes the request in flight and closes, HTTP/2 sends GOAWAY) and
/// drains their tasks.
async fn serve(core: usize, listener: TcpListener, served: Rc<Cell<u64>>, conns: Rc<Cell<u64>>) {
    let mut builder = auto::Builder::new(HyperExecutor);
    builder
        .http1()
        .timer(HyperTimer)
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(HyperTimer);
    let builder = Rc::new(builder);
    let graceful = GracefulShutdown::new();
    let stopping = Handle::current().stopping();
    // The connections' tasks, drained on stop.
    let mut tasks = JoinSet::new();
    let accept_loop = async {
        loop {
            let conn = match listener.accept_stream().await {
                Ok(c) => c,
                // EMFILE and friends: accept() itself backs off before the next try.
                Err(e) => {
                    eprintln!("http_server: core {core}: accept: {e}");
                    continue;
                }
            };
            conns.set(conns.get() + 1);
            let (builder, served, watcher) = (builder.clone(), served.clone(), graceful.watcher());
            // Finished connections leave the set as new ones come.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                let svc = hyper::service::service_fn(move |req| route(req, served.clone()));
                // A connection's error (a reset, a malformed request after its 400) ends
                // only that connection.
                let _ = watcher
                    .watch(builder.serve_connection(conn, svc).into_owned())
                    .await;
            });
        }
    };
    // Whichever ends first; the other is dropped.
    futures::future::select(std::pin::pin!(accept_loop), std::pin::pin!(stopping)).await;
    drop(listener);
    // Every connection finishes what it is doing, then its task ends (it has given its
    // buffers back): what the cluster's shutdown timeout waits for.
    graceful.shutdown().await;
    tasks.shutdown().await;
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let listeners = match Listeners::bind(&args.addr) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("http_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listeners.addr;
    let mut builder = Cluster::builder();
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    let cluster = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("http_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = common::threads(args.threads);
    println!("http_server: listening on http://{addr} with {threads} thread(s); Ctrl-C to stop");
    let totals = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let t = totals.clone();
    let result = cluster.run(move |core| {
        let (listeners, totals) = (listeners.clone(), t.clone());
        async move {
            // A core that cannot listen fails the cluster: `run` returns the error (naming
            // the core) and the process exits non-zero.
            let listener = listeners.for_core()?;
            if let Err(e) = listener.set_nodelay(true) {
                eprintln!("http_server: core {core}: TCP_NODELAY: {e}");
            }
            let (served, conns) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
            serve(core, listener, served.clone(), conns.clone()).await;
            totals.0.fetch_add(conns.get(), Ordering::Relaxed);
            totals.1.fetch_add(served.get(), Ordering::Relaxed);
            Ok::<(), std::io::Error>(())
        }
    });
    match result {
        Ok(()) => {
            println!(
                "http_server: stopped; {} connection(s), {} request(s) served",
                totals.0.load(Ordering::Relaxed),
                totals.1.load(Ordering::Relaxed)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("http_server: {e}");
            ExitCode::FAILURE
        }
    }
}
