//! The echo servers under test, one thread each:
//! `--server ringloop|ringloop-batch|ringloop-spin|ringloop-basic|ringloop-awaited|ringloop-64k|ringloop-awaited-64k|ringloop-256k|ringloop-awaited-256k|tokio|monoio|bare`.
//! Prints `listening ADDR` once bound, then serves until killed.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use ringloop_bench::{pin, raise_nofile, Args};

mod bare;

/// `--exit-after N`: exit (cleanly, so a profiler writes its output) once N connections have
/// closed. A profiled server cannot always be stopped by a signal: valgrind holds signals
/// while the program is blocked in `io_uring_enter`.
static EXIT_AFTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CLOSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) fn conn_closed() {
    use std::sync::atomic::Ordering::Relaxed;
    let n = CLOSED.fetch_add(1, Relaxed) + 1;
    if n == EXIT_AFTER.load(Relaxed) {
        std::process::exit(0);
    }
}

/// The pool buffers of `ringloop-64k` and `ringloop-awaited-64k`.
const BIG_RECV: usize = 64 * 1024;

/// The pool buffers of `ringloop-256k` and `ringloop-awaited-256k`.
const HUGE_RECV: usize = 256 * 1024;

/// The read buffer of the tokio and monoio servers: 8 KiB, as tokio's `BufReader` uses.
/// ringloop receives into its pool's buffers (16 KiB by default), bare into 4 KiB ones.
const READ_BUF: usize = 8 * 1024;

/// `--idle-timeout-ms N`: the ringloop and tokio servers give each receive N ms (a server's
/// idle timeout: one timer armed and cancelled per request). 0: no timeout.
static IDLE_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn idle_timeout() -> Option<Duration> {
    match IDLE_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// The batch wait of the `ringloop-batch` server.
const BATCH_WAIT_US: u64 = 100;

/// How long the `ringloop-spin` server spins before it sleeps.
const SPIN_US: u64 = 30;

/// A listener for a peer server, bound with std, with `TCP_NODELAY` set on it: Linux copies
/// it to every connection accepted, so no server pays a `setsockopt` per connection (as
/// ringloop's own listener does with `ListenOptions::nodelay`).
pub(crate) fn nodelay_listener(addr: SocketAddr) -> std::net::TcpListener {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind(addr).unwrap();
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `on`, which lives across the
    // call; the descriptor is the listener's own.
    let r = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "TCP_NODELAY on the listener");
    l
}

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// `recv_buf`: the pool's buffer size (`--recv-buf`), else the library's default; `mode`:
/// the ring set-up (`--mode defer|coop|basic`), else the library's choice; `tune`: the
/// variant's own setting.
fn ringloop_server(
    addr: SocketAddr,
    recv_buf: Option<usize>,
    mode: Option<&str>,
    tune: impl FnOnce(ringloop::Builder) -> ringloop::Builder,
    awaited: bool,
) {
    let mut b = tune(ringloop::EventLoop::builder());
    if let Some(size) = recv_buf {
        b = b.recv_buffers(1024, size);
    }
    match mode {
        None => {}
        Some("defer") => b = b.setup_mode(ringloop::SetupMode::DeferTaskrun),
        Some("coop") => b = b.setup_mode(ringloop::SetupMode::CoopTaskrun),
        Some("basic") => b = b.setup_mode(ringloop::SetupMode::Basic),
        Some(other) => {
            eprintln!("bench-echo: --mode defer|coop|basic (got {other:?})");
            std::process::exit(2);
        }
    }
    let mut lp = b.build().expect("ringloop needs io_uring");
    lp.block_on(async move {
        // Accepted streams inherit TCP_NODELAY, and take no address they would not use: no
        // system call per connection but the ring's.
        let l = ringloop::net::ListenOptions::new()
            .nodelay(true)
            .bind_tcp(addr)
            .unwrap();
        announce(l.local_addr().unwrap());
        loop {
            let Ok(conn) = l.accept_stream().await else {
                continue;
            };
            // Two task types (see `Receive`): the untimed one holds no timeout state.
            match idle_timeout() {
                None => drop(ringloop::spawn(ringloop_echo(conn, awaited, Untimed))),
                Some(d) => drop(ringloop::spawn(ringloop_echo(conn, awaited, Timed(d)))),
            }
        }
    });
}

/// How an echo task receives: plainly, or under an idle timeout. A type each, so that the
/// untimed task's future holds no timeout state (its size shows in the memory per idle
/// connection), and each is the future it was when the two were written out apart. The
/// methods are `#[inline(always)]`: left to the compiler, the echo task cost 12 more
/// instructions per request under callgrind.
trait Receive: 'static {
    type Out;
    fn recv<'a>(&self, conn: &'a ringloop::net::TcpStream) -> impl Future<Output = Self::Out> + 'a;
    /// The bytes received; `None` ends the connection (an error, or time ran out).
    fn bytes(out: Self::Out) -> Option<ringloop::RecvBuf>;
}

/// The plain `recv()`.
struct Untimed;

impl Receive for Untimed {
    type Out = std::io::Result<ringloop::RecvBuf>;
    #[inline(always)]
    fn recv<'a>(&self, conn: &'a ringloop::net::TcpStream) -> impl Future<Output = Self::Out> + 'a {
        conn.recv()
    }
    #[inline(always)]
    fn bytes(out: Self::Out) -> Option<ringloop::RecvBuf> {
        out.ok()
    }
}

/// Each receive under this idle timeout.
struct Timed(Duration);

impl Receive for Timed {
    type Out = Result<std::io::Result<ringloop::RecvBuf>, ringloop::time::Elapsed>;
    #[inline(always)]
    fn recv<'a>(&self, conn: &'a ringloop::net::TcpStream) -> impl Future<Output = Self::Out> + 'a {
        ringloop::time::timeout(self.0, conn.recv())
    }
    #[inline(always)]
    fn bytes(out: Self::Out) -> Option<ringloop::RecvBuf> {
        out.ok()?.ok()
    }
}

// Written as an `async move` block rather than an `async fn`: an `async fn` keeps its
// arguments twice in its future (as arguments and as locals), 64 bytes more per idle
// connection here.
#[allow(clippy::manual_async_fn)] // see above: the `async fn` form is larger
fn ringloop_echo<R: Receive>(
    conn: ringloop::net::TcpStream,
    awaited: bool,
    receive: R,
) -> impl Future<Output = ()> {
    async move {
        loop {
            let Some(buf) = R::bytes(receive.recv(&conn).await) else {
                break;
            };
            if buf.is_empty() {
                break;
            }
            // Queued: the reply's completion is the loop's business, not the task's.
            let sent = if awaited {
                conn.write_all(buf).await.0
            } else {
                conn.write_queued(buf).await
            };
            if sent.is_err() {
                break;
            }
        }
        drop(conn);
        conn_closed();
    }
}

fn tokio_server(addr: SocketAddr) {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_io();
    if idle_timeout().is_some() {
        b.enable_time(); // only then: tokio's time driver changes how it parks
    }
    let rt = b.build().unwrap();
    rt.block_on(async move {
        let std_l = nodelay_listener(addr);
        std_l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(std_l).unwrap();
        announce(l.local_addr().unwrap());
        loop {
            let Ok((conn, _)) = l.accept().await else {
                continue;
            };
            match idle_timeout() {
                None => drop(tokio::spawn(tokio_echo(conn))),
                Some(d) => drop(tokio::spawn(tokio_echo_timed(conn, d))),
            }
        }
    });
}

#[allow(clippy::manual_async_fn)] // see above: the `async fn` form is larger
fn tokio_echo(mut conn: tokio::net::TcpStream) -> impl Future<Output = ()> {
    async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if conn.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        drop(conn);
        conn_closed();
    }
}

/// `tokio_echo` with each read under `idle` (closed when it runs out).
#[allow(clippy::manual_async_fn)] // see above: the `async fn` form is larger
fn tokio_echo_timed(mut conn: tokio::net::TcpStream, idle: Duration) -> impl Future<Output = ()> {
    async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = match tokio::time::timeout(idle, conn.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(n)) => n,
            };
            if conn.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        drop(conn);
        conn_closed();
    }
}

fn monoio_server(addr: SocketAddr) {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .expect("monoio needs io_uring");
    rt.block_on(async move {
        let l = monoio::net::TcpListener::from_std(nodelay_listener(addr)).unwrap();
        announce(l.local_addr().unwrap());
        loop {
            let Ok((mut conn, _)) = l.accept().await else {
                continue;
            };
            monoio::spawn(async move {
                let mut buf = vec![0u8; READ_BUF];
                loop {
                    let (r, b) = conn.read(buf).await;
                    buf = b;
                    let n = match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let (r, b) = conn.write_all(monoio::buf::IoBuf::slice(buf, 0..n)).await;
                    buf = b.into_inner();
                    if r.is_err() {
                        break;
                    }
                }
                drop(conn);
                conn_closed();
            });
        }
    });
}

const USAGE: &str = "usage: bench-echo --server ringloop|ringloop-batch|ringloop-spin|ringloop-basic|ringloop-awaited|ringloop-64k|ringloop-awaited-64k|ringloop-256k|ringloop-awaited-256k|tokio|monoio|bare
  [--addr IP:PORT] [--cpu N] [--exit-after REQUESTS] [--idle-timeout-ms MS]
  ringloop only: [--recv-buf BYTES] [--mode defer|coop|basic] [--batch-wait-us US] [--spin-us US]";

fn main() {
    let args = Args::parse(
        USAGE,
        &[
            "server",
            "addr",
            "cpu",
            "exit-after",
            "idle-timeout-ms",
            "recv-buf",
            "mode",
            "batch-wait-us",
            "spin-us",
        ],
    );
    raise_nofile();
    if let Some(cpu) = args.str("cpu") {
        pin(cpu.parse().expect("--cpu N"));
    }
    let addr: SocketAddr = args.get("addr", "127.0.0.1:0".parse().unwrap());
    EXIT_AFTER.store(
        args.get("exit-after", 0),
        std::sync::atomic::Ordering::Relaxed,
    );
    IDLE_TIMEOUT_MS.store(
        args.get("idle-timeout-ms", 0),
        std::sync::atomic::Ordering::Relaxed,
    );
    // The ringloop variants differ from `ringloop` in one setting each.
    let recv_buf = args.str("recv-buf").and_then(|v| v.parse().ok());
    let mode = args.str("mode");
    let us = |name| {
        args.str(name)
            .and_then(|v| v.parse().ok())
            .map(Duration::from_micros)
    };
    let same = |b| b;
    match args.str("server").unwrap_or("") {
        "ringloop" => {
            let (wait, spin) = (us("batch-wait-us"), us("spin-us"));
            ringloop_server(
                addr,
                recv_buf,
                mode,
                |b| b.batch_wait(wait).spin_before_sleep(spin),
                false,
            )
        }
        // The same server with `Builder::batch_wait` at 100 µs.
        "ringloop-batch" => ringloop_server(
            addr,
            recv_buf,
            mode,
            |b| b.batch_wait(Some(Duration::from_micros(BATCH_WAIT_US))),
            false,
        ),
        // The same server spinning 30 µs before it sleeps (`Builder::spin_before_sleep`).
        "ringloop-spin" => ringloop_server(
            addr,
            recv_buf,
            mode,
            |b| b.spin_before_sleep(Some(Duration::from_micros(SPIN_US))),
            false,
        ),
        // The same server on a ring set up without DEFER_TASKRUN or COOP_TASKRUN, as monoio
        // sets up its own: the kernel interrupts the thread to post completions, so each
        // enter finds more of them (fewer system calls, more CPU).
        "ringloop-basic" => ringloop_server(addr, recv_buf, Some("basic"), same, false),
        // The same server awaiting each reply (`write_all`) instead of queueing it.
        "ringloop-awaited" => ringloop_server(addr, recv_buf, mode, same, true),
        // `ringloop` and `ringloop-awaited` receiving into 64 KiB pool buffers rather than
        // 16 KiB ones: a large message in fewer receives, so echoed in fewer sends.
        "ringloop-64k" => ringloop_server(addr, recv_buf.or(Some(BIG_RECV)), mode, same, false),
        "ringloop-awaited-64k" => {
            ringloop_server(addr, recv_buf.or(Some(BIG_RECV)), mode, same, true)
        }
        // The same with 256 KiB buffers (four times the default): how much a large message
        // gains from receives four times larger.
        "ringloop-256k" => ringloop_server(addr, recv_buf.or(Some(HUGE_RECV)), mode, same, false),
        "ringloop-awaited-256k" => {
            ringloop_server(addr, recv_buf.or(Some(HUGE_RECV)), mode, same, true)
        }
        "tokio" => tokio_server(addr),
        "monoio" => monoio_server(addr),
        "bare" => bare::serve(addr, announce),
        other => {
            eprintln!(
                "bench-echo: --server ringloop|ringloop-batch|ringloop-spin|ringloop-basic|ringloop-awaited|ringloop-64k|ringloop-awaited-64k|ringloop-256k|ringloop-awaited-256k|tokio|monoio|bare (got {other:?})"
            );
            std::process::exit(2);
        }
    }
}
