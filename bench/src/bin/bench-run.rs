//! The runner: every echo server against the same load generator, pinned to different cores,
//! in interleaved, shuffled rounds; then memory per idle connection, callgrind instructions
//! per request, and the microbenchmarks. Writes `bench/results/latest.md` and `latest.svg`.
//!
//! `bench-run` is the full run (about 25 minutes on 2 cores); `bench-run --quick` takes about
//! a minute and exists so CI keeps the benchmark building and running (it asserts nothing
//! about speed).
//!
//! For a targeted comparison, `--servers ringloop,tokio` and `--points 1x64,64x4k` (point
//! names: 1x64, 64x64, 256x64, 64x4k, 16x64k, 64x64d16) narrow the run, which then writes
//! `partial.md`; `--no-idle`, `--no-callgrind` and `--no-micro` skip those parts, and
//! `--syscall-runs N` sets how many counted runs give the syscall median (0: none).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringloop_bench::{raise_nofile, Args};

const SERVERS: [&str; 5] = ["ringloop", "ringloop-batch", "tokio", "monoio", "bare"];

/// Servers whose code differs: `ringloop-batch` is `ringloop` with a set-up option, so the
/// idle-memory and instruction counts, which it cannot change, are not repeated for it.
fn distinct(servers: &[&'static str]) -> Vec<&'static str> {
    servers
        .iter()
        .copied()
        .filter(|s| *s != "ringloop-batch")
        .collect()
}

#[derive(Clone, Copy)]
struct Point {
    conns: usize,
    size: usize,
    depth: usize,
}

/// Every point of a full run.
const POINTS: [Point; 6] = [
    Point {
        conns: 1,
        size: 64,
        depth: 1,
    },
    Point {
        conns: 64,
        size: 64,
        depth: 1,
    },
    Point {
        conns: 256,
        size: 64,
        depth: 1,
    },
    Point {
        conns: 64,
        size: 4096,
        depth: 1,
    },
    Point {
        conns: 16,
        size: 65536,
        depth: 1,
    },
    Point {
        conns: 64,
        size: 64,
        depth: 16,
    },
];

impl Point {
    /// The name `--points` takes: `1x64`, `64x4k`, `64x64d16`...
    fn id(&self) -> String {
        let size = if self.size >= 1024 {
            format!("{}k", self.size / 1024)
        } else {
            self.size.to_string()
        };
        if self.depth > 1 {
            format!("{}x{size}d{}", self.conns, self.depth)
        } else {
            format!("{}x{size}", self.conns)
        }
    }

    fn label(&self) -> String {
        let size = if self.size >= 1024 {
            format!("{} KiB", self.size / 1024)
        } else {
            format!("{} B", self.size)
        };
        if self.depth > 1 {
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
    let echo = cfg.bin.join("bench-echo");
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
        .args(["--cpu", &cfg.client_cpu.to_string()])
        .args(["--warmup", &cfg.warmup.to_string()])
        .args(["--duration", &cfg.duration.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench-load");
    let tick = 1.0 / clock_ticks_per_sec();
    let mut start = (0, 0);
    let mut end = (0, 0);
    let mut perf: Option<Child> = None;
    let mut result = String::new();
    for line in BufReader::new(load.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "measure start" {
            start = proc_cpu_ticks(pid);
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
fn callgrind_per_request(cfg: &Cfg, server: &str, conns: usize, n1: u64, n2: u64) -> Option<f64> {
    let mut totals = Vec::new();
    let conns = conns.to_string();
    for n in [n1, n2] {
        let out = std::env::temp_dir().join(format!("ringloop-cg-{server}-{conns}-{n}.out"));
        let wrapper: Vec<String> = vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let (srv, addr) = spawn_server(cfg, server, &wrapper, &["--exit-after", &conns]);
        let status = Command::new(cfg.bin.join("bench-load"))
            .args([
                "--addr",
                &addr.to_string(),
                "--conns",
                &conns,
                "--size",
                "64",
            ])
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
        let text = std::fs::read_to_string(&out).ok()?;
        let _ = std::fs::remove_file(&out);
        let total: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        totals.push(total);
    }
    Some((totals[1] - totals[0]) / (n2 - n1) as f64)
}

/// ringloop ÷ `peer` at point `pi` for figure `f`, round by round, as "median× (lowest–highest)".
fn paired(
    samples: &BTreeMap<(usize, &str), Vec<Sample>>,
    pi: usize,
    peer: &str,
    f: &dyn Fn(&Sample) -> f64,
) -> String {
    let (Some(ours), Some(theirs)) = (samples.get(&(pi, "ringloop")), samples.get(&(pi, peer)))
    else {
        return "—".into();
    };
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| f(a) / f(b))
        .filter(|r| r.is_finite())
        .collect();
    if ratios.is_empty() {
        return "—".into();
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = ratios.len();
    let m = median(ratios);
    if n > 1 {
        format!("{m:.2} ({lo:.2}–{hi:.2})")
    } else {
        format!("{m:.2}")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn median_sample(v: &[Sample]) -> Sample {
    let m = |f: &dyn Fn(&Sample) -> f64| median(v.iter().map(f).collect());
    Sample {
        rps: m(&|s| s.rps),
        p50: m(&|s| s.p50),
        p99: m(&|s| s.p99),
        p999: m(&|s| s.p999),
        user: m(&|s| s.user),
        sys: m(&|s| s.sys),
        syscalls: None,
        peak_rss_kib: v.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0),
    }
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

fn main() {
    let args = Args::parse();
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
    let mut points: Vec<Point> = pick("points", POINTS.iter().map(Point::id).collect())
        .into_iter()
        .map(|i| POINTS[i])
        .collect();
    let partial = args.flag("servers") || args.flag("points");
    if quick && !args.flag("points") {
        points = vec![POINTS[1], POINTS[5]];
    }
    let out_dir = PathBuf::from(
        args.str("out")
            .unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/results")),
    );
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

    let mut samples: BTreeMap<(usize, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..rounds {
        for (pi, p) in points.iter().enumerate() {
            let mut order = servers.clone();
            shuffle(&mut order, (round * 31 + pi) as u64 + 1);
            for s in order {
                let sample = measure(&cfg, s, *p, false);
                eprintln!(
                    "  round {} {:<18} {:<9} {:>9.0} req/s  {:>6.2} µs CPU/req",
                    round + 1,
                    p.label(),
                    s,
                    sample.rps,
                    sample.user + sample.sys
                );
                samples.entry((pi, s)).or_default().push(sample);
            }
        }
    }
    let mut med: BTreeMap<(usize, &str), Sample> = samples
        .iter()
        .map(|(k, v)| (*k, median_sample(v)))
        .collect();
    // Syscall counts move between runs (how many completions one io_uring_enter gathers
    // depends on timing): the median of several counted runs, each shorter than a timed one.
    let syscall_runs: usize = args.get("syscall-runs", if quick { 1 } else { 3 });
    if cfg.perf && syscall_runs > 0 {
        let counted_cfg = Cfg {
            duration: cfg.duration.min(2.0),
            ..cfg.clone()
        };
        for (pi, p) in points.iter().enumerate() {
            for s in &servers {
                let counts: Vec<f64> = (0..syscall_runs)
                    .filter_map(|_| measure(&counted_cfg, s, *p, true).syscalls)
                    .collect();
                if !counts.is_empty() {
                    med.get_mut(&(pi, *s)).unwrap().syscalls = Some(median(counts));
                }
            }
        }
    }

    let idle_n = if quick { 1000 } else { 10_000 };
    let idle: Vec<(&str, f64)> = if args.flag("no-idle") {
        Vec::new()
    } else {
        distinct(&servers)
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
    let callgrind: Vec<(&str, Option<f64>, Option<f64>)> = if valgrind {
        distinct(&servers)
            .iter()
            .map(|s| {
                (
                    *s,
                    callgrind_per_request(&cfg, s, 16, n1, n2),
                    callgrind_per_request(&cfg, s, 1, n1, n2),
                )
            })
            .collect()
    } else {
        Vec::new()
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

    let md = report(
        &cfg,
        quick,
        rounds,
        syscall_runs,
        &points,
        &servers,
        &samples,
        &med,
        &idle,
        idle_n,
        &callgrind,
        (n1, n2),
        &micro,
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    let name = if quick {
        "quick"
    } else if partial {
        "partial"
    } else {
        "latest"
    };
    std::fs::write(out_dir.join(format!("{name}.md")), &md).unwrap();
    std::fs::write(
        out_dir.join(format!("{name}.svg")),
        svg(&points, &servers, &med),
    )
    .unwrap();
    println!("{md}");
    eprintln!(
        "bench-run: wrote {} and .svg in {:.0} s",
        out_dir.join(format!("{name}.md")).display(),
        started.elapsed().as_secs_f64()
    );
}

#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &Cfg,
    quick: bool,
    rounds: usize,
    syscall_runs: usize,
    points: &[Point],
    servers: &[&str],
    samples: &BTreeMap<(usize, &str), Vec<Sample>>,
    med: &BTreeMap<(usize, &str), Sample>,
    idle: &[(&str, f64)],
    idle_n: usize,
    callgrind: &[(&str, Option<f64>, Option<f64>)],
    (n1, n2): (u64, u64),
    micro: &str,
) -> String {
    let mut md = String::new();
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "# ringloop echo benchmark{}\n",
        if quick {
            " (quick mode: not for reading)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "{date}; Linux {}; {} × {}; server pinned to CPU {}, load generator to CPU {}; {rounds} round(s) of {} s per (server, point), servers in shuffled order each round; medians over the rounds.\n",
        kernel(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model(),
        cfg.server_cpu,
        cfg.client_cpu,
        cfg.duration
    );
    let _ = writeln!(md, "Servers: `ringloop` (this crate, multishot accept/recv, `RecvBuf` echoed back), `ringloop-batch` (the same with `Builder::batch_wait` at 20 µs: waits gather completions in bunches, opt-in), `tokio` (current_thread), `monoio` (io_uring driver), `bare` (the io-uring crate by hand: multishot accept and recv, a buffer ring, no executor). In this table, ratios are of the medians. CPU is the server's user+system CPU-seconds per 1M requests (from /proc); syscalls per request are counted by `perf stat -e raw_syscalls:sys_enter` on the server's PID, in a separate run per (server, point) since the tracepoint slows every call (the median of {} such runs of {} s).\n", syscall_runs, cfg.duration.min(2.0));
    let cpu = |m: &Sample| m.user + m.sys;
    let rps = |m: &Sample| m.rps;
    let peers: Vec<&str> = servers
        .iter()
        .copied()
        .filter(|s| *s != "ringloop")
        .collect();
    if servers.contains(&"ringloop") && !peers.is_empty() {
        let _ = writeln!(md, "## ringloop against each peer\n\nringloop ÷ peer, taken round by round (the two ran back to back, in the same round) and given as the median over the rounds{}. Above 1 is better for req/s; below 1 is better for CPU per request.\n", if rounds > 1 { ", with the lowest and highest round in brackets: a range that straddles 1.00 is no result either way" } else { "" });
        let mut head = "| point |".to_owned();
        let mut rule = "|---|".to_owned();
        for p in &peers {
            let _ = write!(head, " req/s ÷ {p} | CPU ÷ {p} |");
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for (pi, p) in points.iter().enumerate() {
            let mut row = format!("| {} |", p.label());
            for peer in &peers {
                let _ = write!(
                    row,
                    " {} | {} |",
                    paired(samples, pi, peer, &rps),
                    paired(samples, pi, peer, &cpu)
                );
            }
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md, "\n## Every figure\n");
    }
    let _ = writeln!(md, "| point | server | req/s | ringloop ÷ this | p50 µs | p99 µs | p99.9 µs | CPU s/1M req (user+sys) | user | sys | syscalls/req | peak RSS MiB |");
    let _ = writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (pi, p) in points.iter().enumerate() {
        for s in servers {
            let m = &med[&(pi, *s)];
            let ratio = match med.get(&(pi, "ringloop")) {
                Some(ours) if *s != "ringloop" => format!(
                    "{:.2}× req/s, {:.2}× CPU",
                    ours.rps / m.rps,
                    cpu(ours) / cpu(m)
                ),
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {s} | {:.0} | {ratio} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.1} |",
                p.label(),
                m.rps,
                m.p50,
                m.p99,
                m.p999,
                m.user + m.sys,
                m.user,
                m.sys,
                m.syscalls.map_or("n/a".into(), |v| format!("{v:.3}")),
                m.peak_rss_kib as f64 / 1024.0
            );
        }
    }
    if idle.is_empty() {
        // A run with --no-idle.
    } else {
        let _ = writeln!(md, "\n## Memory per idle connection\n\n{idle_n} connections that each echoed one byte, then went quiet: server RSS growth ÷ connections.\n\n| server | bytes per idle connection |\n|---|---:|");
        for (s, b) in idle {
            let _ = writeln!(md, "| {s} | {b:.0} |");
        }
    }
    if !callgrind.is_empty() {
        let _ = writeln!(md, "\n## User-space instructions per request (callgrind)\n\n64 B echo over 16 connections and over 1; (instructions at {n2} requests − at {n1}) ÷ {}. Free of the machine's noise: exact over one connection, within a few percent over 16 (how many requests share a loop turn varies from run to run). Over one connection an io_uring server turns its loop twice per request (the receive's completion, then the send's), so per-turn costs weigh double there.\n\n| server | instructions/request, 16 conns | ringloop ÷ this | instructions/request, 1 conn | ringloop ÷ this |\n|---|---:|---:|---:|---:|", n2 - n1);
        let ours = callgrind.iter().find(|(s, ..)| *s == "ringloop");
        let fmt = |v: Option<f64>| v.map_or("failed".into(), |v| format!("{v:.0}"));
        let ratio = |o: Option<f64>, v: Option<f64>, s: &str| match (o, v) {
            (Some(o), Some(v)) if s != "ringloop" => format!("{:.2}", o / v),
            _ => "—".into(),
        };
        for (s, many, one) in callgrind {
            let (o16, o1) = ours.map_or((None, None), |(_, a, b)| (*a, *b));
            let _ = writeln!(
                md,
                "| {s} | {} | {} | {} | {} |",
                fmt(*many),
                ratio(o16, *many, s),
                fmt(*one),
                ratio(o1, *one, s)
            );
        }
    }
    if !micro.trim().is_empty() {
        let _ = writeln!(md, "\n## Microbenchmarks\n\n{}", micro.trim());
    }
    let _ = writeln!(
        md,
        "\nChart: [latest.svg](latest.svg). Re-run with `bench/run` (full) or `bench/run --quick`."
    );
    md
}

fn svg(points: &[Point], servers: &[&str], med: &BTreeMap<(usize, &str), Sample>) -> String {
    let colors = ["#d9480f", "#f59f00", "#1c7ed6", "#2b8a3e", "#868e96"];
    let (w, panel_h, top) = (980.0, 260.0, 50.0);
    let group_w = (w - 120.0) / points.len() as f64;
    let bar_w = group_w * 0.8 / servers.len() as f64;
    let mut s = String::new();
    let h = top + 2.0 * (panel_h + 70.0) + 30.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="20" y="24" font-size="15" font-weight="bold">Echo servers, one core each: requests/s (higher is better) and server CPU µs per request (lower is better; the dark foot of a bar is user space, the rest the kernel); bars scaled within each point</text>"#
    );
    for (i, srv) in servers.iter().enumerate() {
        let x = 100.0 + i as f64 * 130.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="44">{srv}</text>"#,
            colors[i % colors.len()],
            x + 16.0
        );
    }
    type Metric<'a> = (&'a str, &'a dyn Fn(&Sample) -> f64);
    let metrics: [Metric; 2] = [
        ("requests/s", &|m: &Sample| m.rps),
        (
            "server CPU µs per request (dark: user space)",
            &|m: &Sample| m.user + m.sys,
        ),
    ];
    for (mi, (title, f)) in metrics.iter().enumerate() {
        let y0 = top + mi as f64 * (panel_h + 70.0) + 20.0;
        let base = y0 + panel_h;
        let _ = writeln!(
            s,
            r#"<text x="20" y="{}" font-weight="bold">{title}</text>"#,
            y0 + 4.0
        );
        let _ = writeln!(
            s,
            r##"<line x1="90" y1="{base}" x2="{}" y2="{base}" stroke="#333"/>"##,
            w - 20.0
        );
        for (pi, p) in points.iter().enumerate() {
            let vals: Vec<f64> = servers.iter().map(|sv| f(&med[&(pi, *sv)])).collect();
            let max = vals.iter().cloned().fold(0.0, f64::max).max(1e-9);
            let gx = 100.0 + pi as f64 * group_w;
            for (si, v) in vals.iter().enumerate() {
                let bh = (panel_h - 30.0) * v / max;
                let x = gx + si as f64 * bar_w;
                let label = if mi == 0 {
                    format!("{:.0}k", v / 1000.0)
                } else {
                    format!("{v:.1}")
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"/>"#,
                    base - bh,
                    bar_w - 2.0,
                    colors[si % colors.len()]
                );
                if mi == 1 {
                    // The user-space share of the CPU bar, darkened from the bottom.
                    let m = &med[&(pi, servers[si])];
                    let uh = bh * m.user / v.max(1e-9);
                    let _ = writeln!(
                        s,
                        r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{uh:.1}" fill="#000" fill-opacity="0.35"/>"##,
                        base - uh,
                        bar_w - 2.0
                    );
                }
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{label}</text>"#,
                    x + bar_w / 2.0 - 1.0,
                    base - bh - 3.0
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                gx + group_w * 0.4,
                base + 16.0,
                p.label()
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
