//! The load generator: `--conns` connections on `--threads` threads (epoll, non-blocking),
//! each keeping `--depth` requests of `--size` bytes in flight (closed loop: a new request
//! goes out when a response is complete). Every byte echoed is checked against what was sent.
//!
//! `--churn`: every request on a connection of its own (connect, send, read the echo, close),
//! `--conns` of them at a time: what a server pays to accept and close, as short-lived
//! clients make it. The client closes with an RST (`SO_LINGER` 0), so that tens of
//! thousands of connections a second leave no `TIME_WAIT` sockets to run out of ports on;
//! the latency then includes the connect.
//!
//! `--rate R`: an open loop instead: each connection sends a request every `conns / R`
//! seconds on a fixed schedule (offset from connection to connection), whether or not the
//! last one was answered, and latency counts from when a request was due, so a server that
//! falls behind is charged for the wait too. What a closed loop cannot show: the latency of
//! a server that is not kept busy (moderate load, where a loop sleeps between requests).
//! The thread spins on `epoll_wait` with no timeout to keep the schedule.
//!
//! `--http REPLY_BYTES`: HTTP/1.1 keep-alive instead of echo: each request is `GET /`, and a
//! reply is complete every `REPLY_BYTES` received (the runner measures a reply first; the
//! service answers every `GET /` alike). Each reply's status line is checked.
//!
//! Timed mode (`--warmup S --duration S`) prints `measure start` and `measure end` lines
//! around the measured window, so a runner can sample the server exactly then; fixed mode
//! (`--requests N`) sends N requests in all and stops. The last line is the result:
//! `result requests=N secs=S p50_us=.. p99_us=.. p999_us=..`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ringloop_bench::{pattern, pin, raise_nofile, Args, Histogram};

struct Conn {
    id: usize,
    /// `None` once closed for good (`--churn` with nothing left to send).
    s: Option<TcpStream>,
    /// Bytes of the request stream sent / echoed back and verified.
    sent: u64,
    recvd: u64,
    /// Send times of the requests in flight, oldest first.
    inflight: std::collections::VecDeque<Instant>,
    out: Vec<u8>,
    out_pos: usize,
}

/// What a request is and how long its reply: an echo of `size` pattern bytes, or (`--http`) a
/// `GET /` whose reply is `reply` bytes long.
#[derive(Clone, Copy)]
enum Proto {
    Echo { size: usize },
    Http { reply: usize },
}

/// The request `--http` sends.
const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";
/// How every reply `--http` counts starts.
const HTTP_OK: &[u8] = b"HTTP/1.1 200 ";

impl Proto {
    /// Bytes of one reply.
    fn reply(self) -> usize {
        match self {
            Proto::Echo { size } => size,
            Proto::Http { reply } => reply,
        }
    }
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    /// Requests left to start in fixed mode (u64::MAX: unlimited).
    budget: AtomicU64,
}

fn take_budget(sh: &Shared) -> bool {
    sh.budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            if b == u64::MAX {
                Some(b)
            } else {
                b.checked_sub(1)
            }
        })
        .is_ok()
}

impl Conn {
    fn queue_request(&mut self, proto: Proto) {
        self.queue_request_due(proto, Instant::now());
    }

    /// Queues a request whose latency counts from `due`.
    fn queue_request_due(&mut self, proto: Proto, due: Instant) {
        match proto {
            Proto::Echo { size } => {
                for i in 0..size as u64 {
                    self.out.push(pattern(self.id, self.sent + i));
                }
                self.sent += size as u64;
            }
            Proto::Http { .. } => self.out.extend_from_slice(GET),
        }
        self.inflight.push_back(due);
    }

    /// Checks received bytes `got`, which start at byte `self.recvd` of the reply stream.
    fn check(&self, proto: Proto, got: &[u8]) {
        match proto {
            Proto::Echo { .. } => {
                for (i, &b) in got.iter().enumerate() {
                    let at = self.recvd + i as u64;
                    let want = pattern(self.id, at);
                    assert_eq!(b, want, "connection {}: byte {at} differs", self.id);
                }
            }
            Proto::Http { reply } => {
                for (i, &b) in got.iter().enumerate() {
                    let pos = ((self.recvd + i as u64) % reply as u64) as usize;
                    if let Some(&want) = HTTP_OK.get(pos) {
                        assert_eq!(
                            b,
                            want,
                            "connection {}: a reply does not start with {:?} (is --http the \
                             length of one?)",
                            self.id,
                            String::from_utf8_lossy(HTTP_OK)
                        );
                    }
                }
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let Some(s) = self.s.as_mut() else {
            return Ok(());
        };
        while self.out_pos < self.out.len() {
            match s.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }
}

/// A connected, non-blocking socket with no Nagle delay; with `rst_on_close`, closed with an
/// RST rather than a FIN (`SO_LINGER` 0: no `TIME_WAIT` left behind).
fn connect(addr: SocketAddr, rst_on_close: bool) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the server");
    s.set_nodelay(true).unwrap();
    if rst_on_close {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `l` is a valid `linger` for the call; the fd is open.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    }
    s.set_nonblocking(true).unwrap();
    s
}

/// Adds connection `i` to the epoll set `ep`.
fn watch(ep: i32, i: usize, s: &TcpStream) {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32,
        u64: i as u64,
    };
    // SAFETY: `ev` is valid for the call; the fd is open.
    let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
    assert_eq!(r, 0, "epoll_ctl: {}", std::io::Error::last_os_error());
}

fn worker(
    addr: SocketAddr,
    ids: std::ops::Range<usize>,
    (proto, depth, churn): (Proto, usize, bool),
    rate: Option<Duration>,
    sh: Arc<Shared>,
    ready: Arc<Barrier>,
) -> (u64, Histogram) {
    // SAFETY: plain epoll syscalls on descriptors this thread owns.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut conns: Vec<Conn> = ids
        .map(|id| Conn {
            id,
            s: Some(connect(addr, churn)),
            sent: 0,
            recvd: 0,
            inflight: Default::default(),
            out: Vec::new(),
            out_pos: 0,
        })
        .collect();
    for (i, c) in conns.iter().enumerate() {
        watch(ep, i, c.s.as_ref().expect("just connected"));
    }
    ready.wait();
    // Open loop: when each connection's next request is due.
    let t0 = Instant::now();
    let n = conns.len().max(1) as u32;
    let mut due: Vec<Instant> = match rate {
        Some(every) => (0..conns.len() as u32)
            .map(|i| t0 + every * i / n)
            .collect(),
        None => Vec::new(),
    };
    // Closed loop: every connection starts with `depth` requests in flight.
    if rate.is_none() {
        for c in conns.iter_mut() {
            for _ in 0..depth {
                if take_budget(&sh) {
                    c.queue_request(proto);
                }
            }
            c.flush().expect("send");
        }
    }
    let mut hist = Histogram::default();
    let mut done = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut idle = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        if let Some(every) = rate {
            let now = Instant::now();
            for (c, d) in conns.iter_mut().zip(due.iter_mut()) {
                while *d <= now && take_budget(&sh) {
                    c.queue_request_due(proto, *d);
                    *d += every;
                }
                if !c.out.is_empty() {
                    c.flush().expect("send");
                }
            }
        }
        let timeout = if rate.is_some() { 0 } else { 100 };
        // SAFETY: `events` has room for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, timeout) };
        if n <= 0 && rate.is_some() {
            continue;
        }
        if n <= 0 {
            // Fixed mode: everything answered and nothing left to start.
            if conns.iter().all(|c| c.inflight.is_empty()) {
                idle += 1;
                if idle > 2 {
                    break;
                }
            }
            continue;
        }
        for ev in &events[..n as usize] {
            let c = &mut conns[ev.u64 as usize];
            while let Some(s) = c.s.as_mut() {
                match s.read(&mut buf) {
                    Ok(0) => panic!("the server closed connection {}", c.id),
                    Ok(k) => {
                        c.check(proto, &buf[..k]);
                        let size = proto.reply();
                        let before = c.recvd / size as u64;
                        c.recvd += k as u64;
                        let after = c.recvd / size as u64;
                        for _ in before..after {
                            let t = c.inflight.pop_front().expect("a request in flight");
                            if sh.measuring.load(Ordering::Relaxed) {
                                hist.record(t.elapsed());
                                done += 1;
                            }
                            if churn {
                                break;
                            }
                            if rate.is_none() && take_budget(&sh) {
                                c.queue_request(proto);
                            }
                        }
                        if churn && c.recvd == size as u64 {
                            // Answered: this connection is done, and the next request goes
                            // out on a new one (closing removes the old one from `ep`).
                            if take_budget(&sh) {
                                let t = Instant::now();
                                c.s = None;
                                let s = connect(addr, true);
                                watch(ep, ev.u64 as usize, &s);
                                c.s = Some(s);
                                c.sent = 0;
                                c.recvd = 0;
                                c.queue_request(proto);
                                *c.inflight.back_mut().expect("just queued") = t;
                            } else {
                                c.s = None;
                            }
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("connection {}: {e}", c.id),
                }
            }
            c.flush().expect("send");
        }
        if sh.budget.load(Ordering::Relaxed) == 0 && conns.iter().all(|c| c.inflight.is_empty()) {
            break;
        }
    }
    // SAFETY: closes the epoll descriptor once.
    unsafe { libc::close(ep) };
    (done, hist)
}

const USAGE: &str = "usage: bench-load [--addr IP:PORT] [--conns N] [--threads N] [--size BYTES]
  [--depth N | --churn | --rate REQ_PER_S] [--requests N | --warmup S --duration S] [--cpu N]
  [--http REPLY_BYTES]";

fn main() {
    let args = Args::parse(
        USAGE,
        &[
            "addr", "conns", "threads", "size", "depth", "churn", "requests", "rate", "warmup",
            "duration", "cpu", "http",
        ],
    );
    raise_nofile();
    let addr: SocketAddr = args.get("addr", "127.0.0.1:7878".parse().unwrap());
    let conns: usize = args.get("conns", 64);
    let threads: usize = args.get::<usize>("threads", 1).clamp(1, conns.max(1));
    let size: usize = args.get("size", 64);
    let depth: usize = args.get("depth", 1);
    let churn = args.flag("churn");
    let proto = match args.get::<usize>("http", 0) {
        0 => Proto::Echo { size },
        reply => Proto::Http { reply },
    };
    assert!(
        !churn || matches!(proto, Proto::Echo { .. }),
        "--churn is an echo load: no --http"
    );
    assert!(
        !churn || depth == 1,
        "--churn sends one request per connection: no --depth"
    );
    let requests: u64 = args.get("requests", 0);
    let rate: f64 = args.get("rate", 0.0);
    assert!(
        rate == 0.0 || (!churn && depth == 1 && requests == 0),
        "--rate is an open loop of single requests in timed mode: no --churn, --depth or --requests"
    );
    // Each connection's interval between requests.
    let rate = (rate > 0.0).then(|| Duration::from_secs_f64(conns as f64 / rate));
    let warmup = Duration::from_secs_f64(args.get("warmup", 1.0));
    let duration = Duration::from_secs_f64(args.get("duration", 5.0));
    if let Some(cpu) = args.str("cpu") {
        pin(cpu.parse().expect("--cpu N"));
    }
    let sh = Arc::new(Shared {
        measuring: AtomicBool::new(requests > 0),
        stop: AtomicBool::new(false),
        budget: AtomicU64::new(if requests > 0 { requests } else { u64::MAX }),
    });
    let ready = Arc::new(Barrier::new(threads + 1));
    let per = conns.div_ceil(threads);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let ids = t * per..((t + 1) * per).min(conns);
            let (sh, ready) = (sh.clone(), ready.clone());
            std::thread::spawn(move || worker(addr, ids, (proto, depth, churn), rate, sh, ready))
        })
        .collect();
    ready.wait();
    let t0;
    let mut out = std::io::stdout();
    if requests > 0 {
        t0 = Instant::now();
    } else {
        std::thread::sleep(warmup);
        writeln!(out, "measure start").unwrap();
        out.flush().unwrap();
        sh.measuring.store(true, Ordering::Relaxed);
        t0 = Instant::now();
        std::thread::sleep(duration);
        sh.measuring.store(false, Ordering::Relaxed);
        writeln!(out, "measure end").unwrap();
        out.flush().unwrap();
        sh.stop.store(true, Ordering::Relaxed);
    }
    let mut total = 0;
    let mut hist = Histogram::default();
    for w in workers {
        let (n, h) = w.join().expect("a load thread failed");
        total += n;
        hist.merge(&h);
    }
    let secs = if requests > 0 {
        t0.elapsed().as_secs_f64()
    } else {
        duration.as_secs_f64()
    };
    writeln!(
        out,
        "result requests={total} secs={secs:.3} p50_us={:.1} p99_us={:.1} p999_us={:.1}",
        hist.quantile_us(0.5),
        hist.quantile_us(0.99),
        hist.quantile_us(0.999)
    )
    .unwrap();
}
