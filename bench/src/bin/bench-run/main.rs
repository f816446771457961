//! The runner: every echo server against the same load generator, pinned to different cores,
//! in interleaved, shuffled rounds; then memory per idle connection, callgrind instructions
//! per request (and per connection, with a connection per request), and the
//! microbenchmarks. Writes `bench/results/latest.md`, `latest.svg` and
//! `latest.raw.tsv` (every sample).
//!
//! Layout: this file measures; `report` makes the markdown and the chart from the
//! [`Results`] alone; `raw` records every sample in `NAME.raw.tsv` and reads it back, so
//! `bench-run --render DIR/NAME.raw.tsv` redraws a run without measuring again.
//!
//! `bench-run` is the full run (about 45 minutes on 2 cores); `bench-run --quick` takes about
//! a minute and exists so CI keeps the benchmark building and running (it asserts nothing
//! about speed).
//!
//! For a targeted comparison, `--servers ringloop,tokio` and `--points 1x64,64x4k` narrow the
//! run, which then writes `partial.md`. A point is `CONNSxSIZE` (`k`: KiB) with at most one
//! of `dDEPTH`, `churn` or `rRATE` (`k`: thousands a second): a full run's are 1x64, 64x64,
//! 256x64, 64x4k, 16x64k, 64x64d16, 16x64churn and 64x64r50k, and any other may be asked
//! for (`1000x1k`, or `64x64r25k,64x64r100k,64x64r200k` for latency under rising load).
//! `--no-idle`, `--no-callgrind` and `--no-micro` skip those parts, and `--syscall-runs N`
//! sets how many counted runs give the syscall median (0: none). `--rounds 0` measures no
//! echo point at all: what is left (the callgrind counts, which no host's noise moves, with
//! `--no-idle --no-micro`) refreshes on a busy machine, into `partial.md`.
//!
//! Each sample records the hypervisor's steal on the two CPUs during its measured window. One
//! with more than 5% is measured again, up to `--steal-retries N` more times (2; 0 in quick
//! mode), and the least-stolen attempt is kept: the same rule for every server, decided by
//! the host's figure alone. The report gives the steal of the samples kept.
//!
//! With valgrind, a full run also counts the callgrind figure with the servers built by the
//! `release-lto` profile (fat LTO, one codegen unit); `--no-lto` skips that build.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringloop_bench::{raise_nofile, Args};

mod aims;
mod http;
mod raw;
mod report;

use raw::{Results, RunInfo};
use report::{median, STEAL_BUSY};

const SERVERS: [&str; 9] = [
    "ringloop",
    "ringloop-batch",
    "ringloop-spin",
    "ringloop-basic",
    "ringloop-awaited",
    "ringloop-compat",
    "tokio",
    "monoio",
    "bare",
];

/// Servers whose code differs: `ringloop-batch`, `ringloop-spin` and `ringloop-basic` are
/// `ringloop` with a set-up option, so the instruction counts and the idle memory, which an
/// option barely changes, are not repeated for them. (Under callgrind a spinning server
/// would count its spin, not its work.)
fn distinct(servers: &[&'static str]) -> Vec<&'static str> {
    servers
        .iter()
        .copied()
        .filter(|s| !matches!(*s, "ringloop-batch" | "ringloop-spin" | "ringloop-basic"))
        .collect()
}

/// Servers whose idle connections differ: `ringloop-awaited` differs from `ringloop` only in
/// how it writes, which an idle connection never does.
fn distinct_idle(servers: &[&'static str]) -> Vec<&'static str> {
    distinct(servers)
        .into_iter()
        .filter(|s| *s != "ringloop-awaited")
        .collect()
}

#[derive(Clone, Copy)]
struct Point {
    conns: usize,
    size: usize,
    depth: usize,
    /// Every request on a connection of its own (`bench-load --churn`).
    churn: bool,
    /// Requests per second of an open loop (`bench-load --rate`); 0: a closed loop.
    rate: u32,
}

impl Point {
    /// A closed loop: each connection keeps `depth` requests in flight.
    const fn closed(conns: usize, size: usize, depth: usize) -> Point {
        Point {
            conns,
            size,
            depth,
            churn: false,
            rate: 0,
        }
    }
}

/// Every point of a full run.
const POINTS: [Point; 8] = [
    Point::closed(1, 64, 1),
    Point::closed(64, 64, 1),
    Point::closed(256, 64, 1),
    Point::closed(64, 4096, 1),
    Point::closed(16, 65536, 1),
    Point::closed(64, 64, 16),
    // Not among the points: what accepting and closing cost.
    Point {
        churn: true,
        ..Point::closed(16, 64, 1)
    },
    // Not among the points: a steady moderate load, the server idle between
    // requests, which a closed loop (the ring kept busy) never shows. What matters here is
    // latency and CPU per request; every server keeps the rate.
    Point {
        rate: 50_000,
        ..Point::closed(64, 64, 1)
    },
];

impl Point {
    /// The name `--points` takes: `1x64`, `64x4k`, `64x64d16`...
    fn id(&self) -> String {
        let size = if self.size >= 1024 && self.size.is_multiple_of(1024) {
            format!("{}k", self.size / 1024)
        } else {
            self.size.to_string()
        };
        if self.rate > 0 && self.rate.is_multiple_of(1000) {
            format!("{}x{size}r{}k", self.conns, self.rate / 1000)
        } else if self.rate > 0 {
            format!("{}x{size}r{}", self.conns, self.rate)
        } else if self.churn {
            format!("{}x{size}churn", self.conns)
        } else if self.depth > 1 {
            format!("{}x{size}d{}", self.conns, self.depth)
        } else {
            format!("{}x{size}", self.conns)
        }
    }

    /// The point a name stands for, the inverse of [`id`](Point::id): `CONNSxSIZE` (a size in
    /// bytes, or KiB with `k`), then at most one of `dDEPTH` (pipelined), `churn` (a
    /// connection per request) or `rRATE` (an open loop at RATE requests a second, thousands
    /// with `k`): `1000x1k`, `64x64d4`, `64x64r120k`. Any such point can be run, not only
    /// those of a full run.
    fn parse(name: &str) -> Result<Point, String> {
        let bad = |why: &str| {
            format!("point {name:?}: {why} (e.g. 64x64, 64x4k, 64x64d16, 16x64churn, 64x64r50k)")
        };
        let (conns, rest) = name.split_once('x').ok_or_else(|| bad("no `x`"))?;
        let conns: usize = conns
            .parse()
            .map_err(|_| bad("connections are not a number"))?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (size, mut rest) = rest.split_at(digits);
        let mut size: usize = size.parse().map_err(|_| bad("no size"))?;
        if let Some(r) = rest.strip_prefix('k') {
            size = size
                .checked_mul(1024)
                .ok_or_else(|| bad("size too large"))?;
            rest = r;
        }
        let count = |s: &str, what: &str| -> Result<u64, String> {
            let (n, scale) = match s.strip_suffix('k') {
                Some(n) => (n, 1000),
                None => (s, 1),
            };
            n.parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(scale))
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(&format!("{what} is not a positive number")))
        };
        let mut p = Point::closed(conns, size, 1);
        if rest == "churn" {
            p.churn = true;
        } else if let Some(d) = rest.strip_prefix('d') {
            p.depth = count(d, "the depth")? as usize;
        } else if let Some(r) = rest.strip_prefix('r') {
            p.rate = u32::try_from(count(r, "the rate")?).map_err(|_| bad("rate too large"))?;
        } else if !rest.is_empty() {
            return Err(bad(&format!("unknown suffix {rest:?}")));
        }
        if conns == 0 || size == 0 {
            return Err(bad("connections and size must be at least 1"));
        }
        Ok(p)
    }

    fn label(&self) -> String {
        let size = if self.size >= 1024 && self.size.is_multiple_of(1024) {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        if self.rate > 0 {
            format!("{} × {size}, open loop at {} req/s", self.conns, self.rate)
        } else if self.churn {
            format!("{} × {size}, a connection each", self.conns)
        } else if self.depth > 1 {
            format!("{} × {size}, {} deep", self.conns, self.depth)
        } else {
            format!("{} × {size}", self.conns)
        }
    }
}

#[derive(Clone, Default)]
struct Sample {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// Server CPU seconds per 1M requests.
    user: f64,
    sys: f64,
    /// Syscalls per request, if perf could count them.
    syscalls: Option<f64>,
    peak_rss_kib: u64,
    /// The share of the server's and the load generator's CPUs that the hypervisor gave to
    /// other guests during the measured window (`steal` in /proc/stat), if known: a figure
    /// taken while it was high says more about the host than about the server.
    steal: Option<f64>,
}

impl Sample {
    /// Server CPU seconds per 1M requests, user and system together.
    fn cpu(&self) -> f64 {
        self.user + self.sys
    }
}

#[derive(Clone)]
struct Cfg {
    bin: PathBuf,
    server_cpu: usize,
    client_cpu: usize,
    warmup: f64,
    duration: f64,
    perf: bool,
}

fn spawn_server(
    cfg: &Cfg,
    server: &str,
    wrapper: &[String],
    extra: &[&str],
) -> (Child, SocketAddr) {
    // The servers on the ecosystem's traits are built apart, with the compat feature.
    let compat = server == "ringloop-compat" || server.starts_with("hyper-");
    let echo = cfg
        .bin
        .join(if compat { "bench-compat" } else { "bench-echo" });
    let mut cmd = if wrapper.is_empty() {
        Command::new(&echo)
    } else {
        let mut c = Command::new(&wrapper[0]);
        c.args(&wrapper[1..]).arg(&echo);
        c
    };
    let mut child = cmd
        .args(["--server", server, "--cpu", &cfg.server_cpu.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bench-echo");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{server}: did not start: {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

fn proc_cpu_ticks(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (
        f.get(11).copied().unwrap_or(0),
        f.get(12).copied().unwrap_or(0),
    )
}

/// Steal and total ticks summed over `cpus`, from the text of /proc/stat (its `cpuN` lines:
/// user nice system idle iowait irq softirq steal ...; guest time is inside user already).
/// `None` if a CPU's line is missing or has no steal field (Linux before 2.6.11).
fn cpu_steal_ticks(stat: &str, cpus: &[usize]) -> Option<(u64, u64)> {
    let mut steal = 0;
    let mut total = 0;
    for cpu in cpus {
        let name = format!("cpu{cpu}");
        let f: Vec<u64> = stat
            .lines()
            .find_map(|l| l.strip_prefix(&name).filter(|r| r.starts_with(' ')))?
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        steal += *f.get(7)?;
        total += f.iter().take(8).sum::<u64>();
    }
    Some((steal, total))
}

/// The share of the ticks between two [`steal_now`] readings that the hypervisor stole.
fn steal_share(start: Option<(u64, u64)>, end: Option<(u64, u64)>) -> Option<f64> {
    match (start, end) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            Some(s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    }
}

/// How long each probe of [`wait_out_steal`] lasts.
const STEAL_PROBE: Duration = Duration::from_secs(1);

/// The longest one [`wait_out_steal`] waits: past it, the retry goes ahead under steal.
pub(crate) const STEAL_WAIT_MAX: Duration = Duration::from_secs(30);

/// Waits, up to `limit`, for the host to stop stealing the run's CPUs: probes them for
/// [`STEAL_PROBE`] at a time until a probe sees no more than [`STEAL_BUSY`] stolen, and
/// returns the time spent. A burst of steal lasts tens of seconds on the hosts `bench/` has
/// run on: measuring again at once, as retries did alone, mostly met the same burst.
///
/// The probe is a ping-pong of one byte between two threads, one pinned to each CPU, over a
/// socket pair: like an echo, each CPU sleeps and is woken in turn. Steal falls on a virtual
/// CPU that halts and then waits to be run again, which a spinning one never does: probes
/// that kept both CPUs spinning found 0.0–1.5% stolen in the seconds between runs of the
/// echo that lost 15–35% (so each wait ended at once), and over one minute of alternating
/// 1 s probes, spinning saw at most 2.5% while the ping-pong saw up to 20%. An idle wait
/// cannot tell at all: an idle CPU has nothing to lose.
fn wait_out_steal(cfg: &Cfg, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        let before = steal_now(cfg);
        if ping_pong(cfg.server_cpu, cfg.client_cpu, STEAL_PROBE).is_err() {
            break; // no probe, no wait: the retry goes ahead
        }
        match steal_share(before, steal_now(cfg)) {
            Some(v) if v > STEAL_BUSY => {}
            // Quiet again, or this machine does not say.
            _ => break,
        }
    }
    start.elapsed()
}

/// One byte back and forth between a thread on `a` and one on `b` for `length`.
fn ping_pong(a: usize, b: usize, length: Duration) -> std::io::Result<()> {
    use std::io::Read as _;
    use std::os::unix::net::UnixStream;
    let (mut near, mut far) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || {
        ringloop_bench::pin(b);
        let mut byte = [0u8];
        // Ends when `near` is closed (a read of 0) or fails.
        while far.read(&mut byte).is_ok_and(|n| n == 1) && far.write_all(&byte).is_ok() {}
    });
    let pinger = std::thread::spawn(move || -> std::io::Result<()> {
        ringloop_bench::pin(a);
        let until = Instant::now() + length;
        let mut byte = [0u8];
        while Instant::now() < until {
            near.write_all(&byte)?;
            near.read_exact(&mut byte)?;
        }
        Ok(())
    });
    let r = pinger.join().unwrap_or(Ok(()));
    let _ = echo.join();
    r
}

/// [`cpu_steal_ticks`] of this machine now.
fn steal_now(cfg: &Cfg) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut cpus = vec![cfg.server_cpu];
    if cfg.client_cpu != cfg.server_cpu {
        cpus.push(cfg.client_cpu);
    }
    cpu_steal_ticks(&stat, &cpus)
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits for `c` to exit by itself; kills it and returns false past `limit`.
fn wait_for_exit(mut c: Child, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(Some(_)) = c.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(c);
    false
}

fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn result_field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// One run of `server` at `p`. With `count_syscalls`, perf counts the server's system calls
/// (a separate run: the tracepoint slows every call, so those runs give no other figure).
fn measure(cfg: &Cfg, server: &str, p: Point, count_syscalls: bool) -> Sample {
    let (srv, addr) = spawn_server(cfg, server, &[], &[]);
    let pid = srv.id();
    let mut load = Command::new(cfg.bin.join("bench-load"))
        .args(["--addr", &addr.to_string()])
        .args([
            "--conns",
            &p.conns.to_string(),
            "--size",
            &p.size.to_string(),
        ])
        .args(["--depth", &p.depth.to_string()])
        .args(if p.churn { &["--churn"][..] } else { &[] })
        .args(if p.rate > 0 {
            vec!["--rate".to_string(), p.rate.to_string()]
        } else {
            vec![]
        })
        .args(["--cpu", &cfg.client_cpu.to_string()])
        .args(["--warmup", &cfg.warmup.to_string()])
        .args(["--duration", &cfg.duration.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench-load");
    let tick = 1.0 / clock_ticks_per_sec();
    let mut start = (0, 0);
    let mut end = (0, 0);
    let (mut steal_start, mut steal_end) = (None, None);
    let mut perf: Option<Child> = None;
    let mut result = String::new();
    for line in BufReader::new(load.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "measure start" {
            start = proc_cpu_ticks(pid);
            steal_start = steal_now(cfg);
            if count_syscalls {
                perf = Command::new("perf")
                    .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p"])
                    .arg(pid.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .ok();
            }
        } else if line == "measure end" {
            end = proc_cpu_ticks(pid);
            steal_end = steal_now(cfg);
            if let Some(pf) = perf.as_ref() {
                // SAFETY: signals a child we spawned and have not yet reaped.
                unsafe { libc::kill(pf.id() as i32, libc::SIGINT) };
            }
        } else if line.starts_with("result ") {
            result = line;
        }
    }
    let status = load.wait().unwrap();
    assert!(
        status.success(),
        "{server} at {}: the load generator failed",
        p.label()
    );
    let peak = proc_status_kib(pid, "VmHWM:");
    kill(srv);
    let requests = result_field(&result, "requests");
    let syscalls = perf.and_then(|pf| {
        let out = pf.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let n: f64 = text
            .lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()?;
        Some(n / requests.max(1.0))
    });
    let per_m = 1e6 / requests.max(1.0);
    Sample {
        rps: requests / result_field(&result, "secs").max(1e-9),
        p50: result_field(&result, "p50_us"),
        p99: result_field(&result, "p99_us"),
        p999: result_field(&result, "p999_us"),
        user: (end.0 - start.0) as f64 * tick * per_m,
        sys: (end.1 - start.1) as f64 * tick * per_m,
        syscalls,
        peak_rss_kib: peak,
        steal: steal_share(steal_start, steal_end),
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Server memory per idle connection: RSS growth with `n` connections that each echoed one
/// byte and then went quiet.
fn idle_bytes(cfg: &Cfg, server: &str, n: usize) -> f64 {
    use std::io::Read;
    let (srv, addr) = spawn_server(cfg, server, &[], &[]);
    let pid = srv.id();
    let ping = |s: &mut TcpStream| {
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
    };
    let mut warm = TcpStream::connect(addr).unwrap();
    // Cycle the server's receive pools (ringloop and bare take buffers from a 1024- or
    // 4096-entry ring in order): their first touch is start-up memory, not per connection.
    for _ in 0..5000 {
        ping(&mut warm);
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = proc_status_kib(pid, "VmRSS:");
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        ping(&mut s);
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = proc_status_kib(pid, "VmRSS:");
    kill(srv);
    drop(conns);
    (after.saturating_sub(before) * 1024) as f64 / n as f64
}

/// User-space instructions per request under callgrind, over `conns` connections: the
/// difference between a run of `n2` and one of `n1` requests, divided by `n2 - n1`, so
/// start-up cancels out.
fn callgrind_per_request(
    cfg: &Cfg,
    server: &str,
    conns: usize,
    n1: u64,
    n2: u64,
    extra: &[&str],
) -> Option<f64> {
    let a = callgrind_total(cfg, server, conns, n1, extra, false)?;
    let b = callgrind_total(cfg, server, conns, n2, extra, false)?;
    Some((b - a) / (n2 - n1) as f64)
}

/// User-space instructions per connection under callgrind, when every 64 B request comes on
/// a connection of its own (`bench-load --churn`), `conns` at a time: accept, receive, send,
/// close. The difference between runs of `n2` and `n1` connections, as above.
fn callgrind_per_conn(cfg: &Cfg, server: &str, conns: usize, n1: u64, n2: u64) -> Option<f64> {
    let a = callgrind_total(cfg, server, conns, n1, &[], true)?;
    let b = callgrind_total(cfg, server, conns, n2, &[], true)?;
    Some((b - a) / (n2 - n1) as f64)
}

/// The instructions `server` ran under callgrind while serving `n` requests over `conns`
/// connections at a time (`churn`: each request on a new connection). The server exits once
/// every connection closed.
fn callgrind_total(
    cfg: &Cfg,
    server: &str,
    conns: usize,
    n: u64,
    extra: &[&str],
    churn: bool,
) -> Option<f64> {
    let exit_after = if churn {
        n.to_string()
    } else {
        conns.to_string()
    };
    let conns = conns.to_string();
    let out = std::env::temp_dir().join(format!(
        "ringloop-cg-{server}-{conns}-{n}{}.out",
        if churn { "-churn" } else { "" }
    ));
    let wrapper: Vec<String> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let args: Vec<&str> = ["--exit-after", exit_after.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let (srv, addr) = spawn_server(cfg, server, &wrapper, &args);
    let status = Command::new(cfg.bin.join("bench-load"))
        .args([
            "--addr",
            &addr.to_string(),
            "--conns",
            &conns,
            "--size",
            "64",
        ])
        .args(if churn { &["--churn"][..] } else { &[] })
        .args(["--requests", &n.to_string()])
        .args(["--cpu", &cfg.client_cpu.to_string()])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    // The server exits by itself once the connections closed (--exit-after), so
    // valgrind writes its output; signals cannot stop it while it waits in io_uring_enter.
    let exited = wait_for_exit(srv, Duration::from_secs(120));
    if !status.success() || !exited {
        return None;
    }
    callgrind_out_total(&out)
}

/// The total instructions in the callgrind output file `out`, which is removed.
fn callgrind_out_total(out: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(out).ok()?;
    let _ = std::fs::remove_file(out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Each server's instructions per request over 16 connections and over one, with the
/// binaries of `cfg`.
fn callgrind_rows(
    cfg: &Cfg,
    servers: &[&'static str],
    n1: u64,
    n2: u64,
    extra: &[&str],
) -> Vec<(&'static str, Option<f64>, Option<f64>)> {
    servers
        .iter()
        .map(|s| {
            (
                *s,
                callgrind_per_request(cfg, s, 16, n1, n2, extra),
                callgrind_per_request(cfg, s, 1, n1, n2, extra),
            )
        })
        .collect()
}

/// Builds the servers (and the load generator) with the `release-lto` profile next to the
/// release build; the configuration that runs them, or `None` (said on stderr) if the build
/// failed.
fn build_lto(cfg: &Cfg) -> Option<Cfg> {
    let target = cfg.bin.parent()?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    eprintln!("bench-run: building the servers with --profile release-lto for callgrind");
    let ok = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--profile",
            "release-lto",
            "-p",
            "ringloop-bench",
        ])
        .args(["--bin", "bench-echo", "--bin", "bench-load", "--target-dir"])
        .arg(target)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("bench-run: the release-lto build failed; its callgrind table is left out");
        return None;
    }
    Some(Cfg {
        bin: target.join("release-lto"),
        ..cfg.clone()
    })
}

/// A small xorshift generator for the round order: no dependency, and a fixed seed per
/// round so a run can be repeated.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Writes `NAME.md` and `NAME.svg` of `r` into `dir`; returns the report.
fn write_report(r: &Results, dir: &Path, name: &str) -> String {
    let md = report::report(r, name);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("{name}.md")), &md).unwrap();
    // A run without timed rounds has nothing to chart.
    if r.timed() {
        std::fs::write(dir.join(format!("{name}.svg")), report::svg(r)).unwrap();
    }
    md
}

/// `--render DIR/NAME.raw.tsv`: remakes `NAME.md` and `NAME.svg` beside it from the samples.
fn render(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("bench-run: cannot read {}: {e}", path.display());
        std::process::exit(2)
    });
    let r = Results::from_tsv(&text).unwrap_or_else(|e| {
        eprintln!("bench-run: {}: {e}", path.display());
        std::process::exit(2)
    });
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let name = file.strip_suffix(".raw.tsv").unwrap_or_else(|| {
        eprintln!("bench-run: --render takes a NAME.raw.tsv file");
        std::process::exit(2)
    });
    let dir = path.parent().unwrap_or(Path::new("."));
    write_report(&r, dir, name);
    eprintln!(
        "bench-run: rendered {name}.md{} in {}",
        if r.timed() {
            format!(" and {name}.svg")
        } else {
            String::new()
        },
        dir.display()
    );
}

const USAGE: &str =
    "usage: bench-run [--quick] [--rounds N] [--duration S] [--warmup S] [--out DIR]
  [--servers a,b] [--points 1x64,64x4k,64x64d16,16x64churn,64x64r100k]
  [--no-idle] [--no-callgrind] [--no-micro] [--no-lto] [--syscall-runs N] [--steal-retries N]
  [--steal-wait S]
  bench-run --http [--rounds N] [--duration S] [--warmup S] [--out DIR]
  bench-run --render DIR/NAME.raw.tsv";

fn main() {
    let args = Args::parse(
        USAGE,
        &[
            "render",
            "quick",
            "rounds",
            "duration",
            "warmup",
            "out",
            "servers",
            "points",
            "no-idle",
            "no-callgrind",
            "no-micro",
            "no-lto",
            "syscall-runs",
            "steal-retries",
            "steal-wait",
            "http",
        ],
    );
    if let Some(path) = args.str("render") {
        render(Path::new(path));
        return;
    }
    raise_nofile();
    let quick = args.flag("quick");
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let perf = Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let cfg = Cfg {
        bin,
        server_cpu: 0,
        client_cpu: if cpus > 1 { 1 } else { 0 },
        warmup: args.get("warmup", if quick { 0.2 } else { 1.0 }),
        duration: args.get("duration", if quick { 0.8 } else { 3.0 }),
        perf,
    };
    let rounds: usize = args.get("rounds", if quick { 1 } else { 7 });
    // `--servers a,b` and `--points 1x64,64x4k` narrow a run (for a targeted comparison); such
    // a run writes `partial.md` and leaves `latest.md` alone.
    let pick = |key: &str, all: Vec<String>| -> Vec<usize> {
        match args.str(key) {
            None => (0..all.len()).collect(),
            Some(list) => list
                .split(',')
                .map(|want| {
                    all.iter().position(|n| n == want).unwrap_or_else(|| {
                        eprintln!("bench-run: --{key}: no {want:?}; one of {}", all.join(","));
                        std::process::exit(2)
                    })
                })
                .collect(),
        }
    };
    let servers: Vec<&str> = pick("servers", SERVERS.iter().map(|s| s.to_string()).collect())
        .into_iter()
        .map(|i| SERVERS[i])
        .collect();
    let mut points: Vec<Point> = match args.str("points") {
        None => POINTS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                Point::parse(name).unwrap_or_else(|e| {
                    eprintln!("bench-run: --points: {e}");
                    std::process::exit(2)
                })
            })
            .collect(),
    };
    // `--rounds 0` (the noise-free parts alone) never stands in for a full run either.
    let partial = args.flag("servers") || args.flag("points") || rounds == 0;
    if quick && !args.flag("points") {
        points = vec![POINTS[1], POINTS[5], POINTS[7]];
    }
    let out_dir = PathBuf::from(
        args.str("out")
            .unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/results")),
    );
    if args.flag("http") {
        match http::run(&cfg, rounds, &out_dir) {
            Some(path) => eprintln!("bench-run: wrote {}", path.display()),
            None => std::process::exit(1),
        }
        return;
    }
    let started = Instant::now();
    eprintln!(
        "bench-run: {} rounds × {} points × {} servers, {} s each; server on CPU {}, load on CPU {}; perf {}",
        rounds,
        points.len(),
        servers.len(),
        cfg.duration,
        cfg.server_cpu,
        cfg.client_cpu,
        if perf { "counts syscalls" } else { "unavailable: syscalls n/a" }
    );

    let steal_retries: usize = args.get("steal-retries", if quick { 0 } else { 2 });
    // What the whole run may spend waiting for steal to pass before retries, at most
    // `STEAL_WAIT_MAX` each: on a host stolen from all along, the run still ends.
    let steal_wait_budget =
        Duration::from_secs_f64(args.get("steal-wait", if quick { 0.0 } else { 900.0 }));
    let mut steal_waited = Duration::ZERO;
    let mut retried = 0;
    let mut samples: BTreeMap<(usize, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for (pi, p) in points.iter().enumerate() {
            let mut order = servers.clone();
            shuffle(&mut order, (round * 31 + pi) as u64 + 1);
            for s in order {
                // A sample the hypervisor stole from is measured again, up to `steal_retries`
                // times, and the least-stolen attempt is kept: the same rule for every
                // server, decided by the host's figure, never by the server's.
                let take = |attempt: usize| {
                    let sample = measure(&cfg, s, *p, false);
                    eprintln!(
                        "  round {} {:<18} {:<9} {:>9.0} req/s  {:>6.2} µs CPU/req{}{}",
                        round + 1,
                        p.label(),
                        s,
                        sample.rps,
                        sample.cpu(),
                        sample
                            .steal
                            .map_or(String::new(), |v| format!("  steal {:.1}%", v * 100.0)),
                        if attempt > 0 { "  (again)" } else { "" }
                    );
                    sample
                };
                let mut kept = take(0);
                for attempt in 1..=steal_retries {
                    if kept.steal.is_none_or(|v| v <= STEAL_BUSY) {
                        break;
                    }
                    if attempt == 1 {
                        retried += 1;
                    }
                    let left = steal_wait_budget.saturating_sub(steal_waited);
                    if !left.is_zero() {
                        let waited = wait_out_steal(&cfg, left.min(STEAL_WAIT_MAX));
                        steal_waited += waited;
                        eprintln!("  (waited {:.0} s for steal to pass)", waited.as_secs_f64());
                    }
                    let again = take(attempt);
                    if again.steal < kept.steal {
                        kept = again;
                    }
                }
                samples.entry((pi, s)).or_default().push(kept);
            }
        }
    }
    // Syscall counts move between runs (how many completions one io_uring_enter gathers
    // depends on timing): the median of several counted runs, each shorter than a timed one.
    let syscall_runs: usize = if rounds == 0 {
        0
    } else {
        args.get("syscall-runs", if quick { 1 } else { 3 })
    };
    let syscall_secs = cfg.duration.min(2.0);
    let mut syscalls = BTreeMap::new();
    if cfg.perf && syscall_runs > 0 {
        let counted_cfg = Cfg {
            duration: syscall_secs,
            ..cfg.clone()
        };
        for (pi, p) in points.iter().enumerate() {
            for s in &servers {
                let counts: Vec<f64> = (0..syscall_runs)
                    .filter_map(|_| measure(&counted_cfg, s, *p, true).syscalls)
                    .collect();
                if !counts.is_empty() {
                    syscalls.insert((pi, *s), median(counts));
                }
            }
        }
    }

    let idle_n = if quick { 1000 } else { 10_000 };
    let idle: Vec<(&str, f64)> = if args.flag("no-idle") {
        Vec::new()
    } else {
        distinct_idle(&servers)
            .iter()
            .map(|s| (*s, idle_bytes(&cfg, s, idle_n)))
            .collect()
    };

    let valgrind = !args.flag("no-callgrind")
        && Command::new("valgrind")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let (n1, n2) = if quick { (1000, 3000) } else { (5000, 25000) };
    let callgrind = if valgrind {
        callgrind_rows(&cfg, &distinct(&servers), n1, n2, &[])
    } else {
        Vec::new()
    };
    // With a timer per request (a server's idle timeout), for the servers that take one. Not
    // in quick mode.
    let timed: Vec<&'static str> = servers
        .iter()
        .copied()
        .filter(|s| matches!(*s, "ringloop" | "tokio"))
        .collect();
    let callgrind_timeout = if valgrind && !quick {
        callgrind_rows(&cfg, &timed, n1, n2, &["--idle-timeout-ms", "30000"])
    } else {
        Vec::new()
    };
    // A connection per request: what accepting and closing cost. In quick mode for ringloop
    // and tokio only, over fewer connections, to keep `--churn` from rotting.
    // Over 16 connections at a time, as a server sees them, and over one, where every
    // connection is a loop turn of its own and the count is exact.
    let callgrind_churn: Vec<(&'static str, Option<f64>, Option<f64>)> = if valgrind {
        let (c1, c2) = if quick { (300, 900) } else { (2000, 6000) };
        distinct(&servers)
            .into_iter()
            .filter(|s| !quick || matches!(*s, "ringloop" | "tokio"))
            .map(|s| {
                (
                    s,
                    callgrind_per_conn(&cfg, s, 16, c1, c2),
                    callgrind_per_conn(&cfg, s, 1, c1, c2),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    // The same under a production-style build, which inlines across crates: it changes the
    // servers' costs by different amounts. Not in quick mode (a minute-long smoke run).
    let callgrind_lto = match (valgrind && !quick && !args.flag("no-lto")).then(|| build_lto(&cfg))
    {
        // `bench-compat` is not built with this profile.
        Some(Some(lto)) => {
            let built: Vec<_> = distinct(&servers)
                .into_iter()
                .filter(|s| *s != "ringloop-compat")
                .collect();
            callgrind_rows(&lto, &built, n1, n2, &[])
        }
        _ => Vec::new(),
    };

    let micro = if args.flag("no-micro") {
        String::new()
    } else {
        Command::new(cfg.bin.join("bench-micro"))
            .args(if quick { vec!["--quick"] } else { vec![] })
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };

    let results = Results {
        info: RunInfo {
            date: Command::new("date")
                .args(["-u", "+%Y-%m-%d"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default(),
            kernel: kernel(),
            cpu: cpu_model(),
            cpus,
            server_cpu: cfg.server_cpu,
            client_cpu: cfg.client_cpu,
            duration: cfg.duration,
            rounds,
            syscall_runs,
            syscall_secs,
            steal_retries,
            retried,
            steal_waited: steal_waited.as_secs_f64(),
            quick,
            idle_n,
            callgrind_n: (n1, n2),
        },
        points,
        servers,
        samples,
        syscalls,
        idle,
        callgrind,
        callgrind_lto,
        callgrind_timeout,
        callgrind_churn,
        micro,
    };
    let name = if quick {
        "quick"
    } else if partial {
        "partial"
    } else {
        "latest"
    };
    let md = write_report(&results, &out_dir, name);
    std::fs::write(out_dir.join(format!("{name}.raw.tsv")), results.to_tsv()).unwrap();
    println!("{md}");
    eprintln!(
        "bench-run: wrote {} (.svg, .raw.tsv) in {:.0} s",
        out_dir.join(format!("{name}.md")).display(),
        started.elapsed().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steal_probe_ends_when_its_time_is_up() {
        let t = Instant::now();
        ping_pong(0, 0, Duration::from_millis(50)).unwrap();
        // Both threads are joined: the echo side saw the socket close.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn steal_is_summed_over_the_cpus_asked_for() {
        let stat = "cpu  9 9 9 9 9 9 9 9 0 0\n\
                    cpu0 10 0 20 60 5 1 2 2 0 0\n\
                    cpu1 30 1 10 40 0 0 1 18 7 0\n\
                    cpu10 1 1 1 1 1 1 1 1000 0 0\n";
        // cpu0: 100 ticks, 2 stolen; cpu1: 100, 18 (guest time is not added again).
        assert_eq!(cpu_steal_ticks(stat, &[0]), Some((2, 100)));
        assert_eq!(cpu_steal_ticks(stat, &[1]), Some((18, 100)));
        assert_eq!(cpu_steal_ticks(stat, &[0, 1]), Some((20, 200)));
        assert_eq!(cpu_steal_ticks(stat, &[2]), None);
        assert_eq!(cpu_steal_ticks("cpu0 1 2 3 4\n", &[0]), None);
    }

    #[test]
    fn every_point_name_reads_back_to_its_point() {
        let extra = [
            Point::closed(1000, 1024, 1),
            Point::closed(3, 100_000, 7),
            Point {
                rate: 1500,
                ..Point::closed(2, 64, 1)
            },
        ];
        for p in POINTS.iter().chain(&extra) {
            let back = Point::parse(&p.id()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.id(), p.id());
            assert_eq!(
                (back.conns, back.size, back.depth, back.churn, back.rate),
                (p.conns, p.size, p.depth, p.churn, p.rate)
            );
        }
        let p = Point::parse("64x4kr120k").unwrap();
        assert_eq!((p.conns, p.size, p.rate), (64, 4096, 120_000));
    }

    #[test]
    fn a_malformed_point_is_refused_with_its_name() {
        for bad in [
            "",
            "64",
            "x64",
            "0x64",
            "64x0",
            "64x",
            "64x64d0",
            "64x64q",
            "64x64r",
            "64x64rk",
            "64x64d4churn",
            "64x64r99999999k",
            "-1x64",
        ] {
            let e = Point::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
