//! `bench-run --http`: one hyper HTTP/1.1 service on ringloop (the `hyper` feature) against
//! the same service on tokio's `current_thread` runtime, one server core each, loaded by wrk
//! on the other core, and at a fixed rate by `bench-load --http` (an open loop, where both
//! servers idle between requests). Rounds interleave the two servers in shuffled order; each
//! figure is a ratio taken within a round, reported as the median over rounds with its range.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::callgrind::callgrind_out_total;
use crate::measure::{clock_ticks_per_sec, kill, proc_cpu_ticks, spawn_server, wait_for_exit, Cfg};
use crate::shuffle;
use crate::stats::median;

/// The servers: ours first, the peer second.
const SERVERS: [&str; 2] = ["hyper-ringloop", "hyper-tokio"];

/// A load: `conns` keep-alive connections, each with `pipeline` requests in flight (wrk, a
/// closed loop), or (`rate` > 0) sending `rate` requests a second in all whether or not the
/// last were answered (`bench-load --http`, an open loop).
#[derive(Clone, Copy)]
struct Load {
    conns: usize,
    pipeline: usize,
    rate: u64,
}

const LOADS: [Load; 4] = [
    Load {
        conns: 64,
        pipeline: 1,
        rate: 0,
    },
    Load {
        conns: 256,
        pipeline: 1,
        rate: 0,
    },
    Load {
        conns: 64,
        pipeline: 16,
        rate: 0,
    },
    Load {
        conns: 64,
        pipeline: 1,
        rate: 50_000,
    },
];

impl Load {
    fn label(self) -> String {
        if self.rate > 0 {
            format!("{} conns, {} req/s open loop", self.conns, self.rate)
        } else if self.pipeline > 1 {
            format!("{} conns, {} pipelined", self.conns, self.pipeline)
        } else {
            format!("{} conns, keep-alive", self.conns)
        }
    }
}

/// One measurement of one server at one load.
#[derive(Clone, Copy)]
struct Sample {
    rps: f64,
    /// Server CPU seconds per request, in µs.
    cpu_us: f64,
    /// The share of its core the server used (1.0: the core was the limit).
    busy: f64,
}

/// wrk, found or installed; `None` with the reason printed.
fn wrk() -> Option<&'static str> {
    let have = || {
        Command::new("wrk")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if have() {
        return Some("wrk");
    }
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("bench-run: wrk is missing; installing Debian's package");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "wrk"])
            .stdout(Stdio::null())
            .status();
        if have() {
            return Some("wrk");
        }
    }
    eprintln!(
        "bench-run: the HTTP benchmark needs wrk, which is not installed; \
         install it (Debian: `apt-get install wrk`) and run again"
    );
    None
}

/// The wrk script that sends `n` requests at once on each connection.
fn pipeline_script(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join(format!("pipeline{n}.lua"));
    let script = format!(
        "init = function(args)\n  local r = {{}}\n  for i = 1, {n} do r[i] = wrk.format(nil, \"/\") end\n  req = table.concat(r)\nend\nrequest = function() return req end\n"
    );
    std::fs::write(&path, script).expect("write the wrk script");
    path
}

/// Runs wrk on the client CPU for `secs` against `addr`; its output.
fn run_wrk(cfg: &Cfg, addr: &str, load: Load, script: Option<&Path>, secs: f64) -> String {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cfg.client_cpu.to_string(), "wrk", "-t1"])
        .arg(format!("-c{}", load.conns))
        .arg(format!("-d{}s", secs.max(1.0).round() as u64));
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .arg(format!("http://{addr}/"))
        .stderr(Stdio::null())
        .output()
        .expect("run wrk under taskset");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `N requests in` from wrk's summary.
fn requests(out: &str) -> f64 {
    out.lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(' ')?;
            rest.starts_with("requests in").then(|| n.parse().ok())?
        })
        .unwrap_or(0.0)
}

fn measure(cfg: &Cfg, server: &str, load: Load, script: Option<&Path>) -> Sample {
    if load.rate > 0 {
        return measure_open(cfg, server, load);
    }
    let (srv, addr) = spawn_server(cfg, server, &[], &[]);
    let addr = addr.to_string();
    if cfg.warmup > 0.0 {
        run_wrk(cfg, &addr, load, script, cfg.warmup);
    }
    let (u0, s0) = proc_cpu_ticks(srv.id());
    let t0 = Instant::now();
    let out = run_wrk(cfg, &addr, load, script, cfg.duration);
    let wall = t0.elapsed().as_secs_f64();
    let (u1, s1) = proc_cpu_ticks(srv.id());
    kill(srv);
    let n = requests(&out);
    let cpu = (u1 + s1 - u0 - s0) as f64 / clock_ticks_per_sec();
    Sample {
        rps: n / wall,
        cpu_us: if n > 0.0 { cpu / n * 1e6 } else { f64::NAN },
        busy: cpu / wall,
    }
}

/// An open-loop load: `bench-load --http` at `load.rate` requests a second, the server's
/// CPU read at the load generator's `measure start` and `measure end`.
fn measure_open(cfg: &Cfg, server: &str, load: Load) -> Sample {
    let (srv, addr) = spawn_server(cfg, server, &[], &[]);
    let reply = reply_len(addr).expect("a first GET / is answered");
    let mut gen = crate::measure::load_command(cfg, addr, load.conns)
        .args(["--http", &reply.to_string()])
        .args(["--rate", &load.rate.to_string()])
        .spawn()
        .expect("start bench-load");
    let (mut start, mut end) = ((0, 0), (0, 0));
    let mut result = String::new();
    for line in BufReader::new(gen.stdout.take().expect("piped")).lines() {
        let line = line.expect("bench-load's output");
        if line == "measure start" {
            start = proc_cpu_ticks(srv.id());
        } else if line == "measure end" {
            end = proc_cpu_ticks(srv.id());
        } else if line.starts_with("result ") {
            result = line;
        }
    }
    let ok = gen.wait().is_ok_and(|s| s.success());
    kill(srv);
    assert!(
        ok,
        "{server} at {}: the load generator failed",
        load.label()
    );
    let n = crate::measure::result_field(&result, "requests");
    let wall = crate::measure::result_field(&result, "secs").max(1e-9);
    let cpu = (end.0 + end.1 - start.0 - start.1) as f64 / clock_ticks_per_sec();
    Sample {
        rps: n / wall,
        cpu_us: if n > 0.0 { cpu / n * 1e6 } else { f64::NAN },
        busy: cpu / wall,
    }
}

/// The length of the service's reply to `GET /` (head and body), from one request: every
/// reply has it (the `date` header is of fixed width).
fn reply_len(addr: SocketAddr) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(GET)?;
    let mut buf = Vec::new();
    read_response(&mut s, &mut buf)?;
    Ok(buf.len())
}

/// The request the callgrind client and the open loop send.
const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n";

/// Reads one response from `s`: the head, then `content-length` bytes of body. `buf` holds
/// what was read past it (none: requests are not pipelined).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(());
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `n` keep-alive requests in all over `conns` connections (a thread each, one request in
/// flight per connection), then closes them.
fn http_client(addr: SocketAddr, conns: usize, n: u64) -> bool {
    let each = n / conns as u64;
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                let mut buf = Vec::new();
                for _ in 0..each {
                    s.write_all(GET)?;
                    read_response(&mut s, &mut buf)?;
                }
                Ok(())
            })
        })
        .collect();
    threads
        .into_iter()
        .all(|t| t.join().is_ok_and(|r| r.is_ok()))
}

/// The instructions `server` ran under callgrind serving `n` requests over `conns`
/// connections; it exits once they closed.
fn callgrind_total(cfg: &Cfg, server: &str, conns: usize, n: u64) -> Option<f64> {
    let out = std::env::temp_dir().join(format!("ringloop-cg-{server}-{conns}-{n}.out"));
    let wrapper: Vec<String> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let exit_after = conns.to_string();
    let (srv, addr) = spawn_server(cfg, server, &wrapper, &["--exit-after", &exit_after]);
    let ok = http_client(addr, conns, n);
    let exited = wait_for_exit(srv, Duration::from_secs(120));
    if !ok || !exited {
        return None;
    }
    callgrind_out_total(&out)
}

/// The connection counts of the instruction counts: 16 at once, and one, where every
/// request is a loop turn of its own and the count is exact.
const CALLGRIND_CONNS: [usize; 2] = [16, 1];

/// Median and range of ours ÷ the peer's, round by round.
fn ratios(ours: &[Sample], theirs: &[Sample], f: fn(&Sample) -> f64) -> (f64, f64, f64) {
    let r: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| f(a) / f(b))
        .filter(|r| r.is_finite())
        .collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (median(r), lo, hi)
}

/// Runs the HTTP benchmark and writes `out_dir/http.md`; returns its path.
pub(crate) fn run(cfg: &Cfg, rounds: usize, out_dir: &Path) -> Option<std::path::PathBuf> {
    wrk()?;
    if !cfg.bin.join("bench-compat").exists() {
        eprintln!(
            "bench-run: bench-compat is not built (bench/run builds it with --features compat)"
        );
        return None;
    }
    std::fs::create_dir_all(out_dir).expect("create the output directory");
    let started = Instant::now();
    let mut samples: Vec<[Vec<Sample>; 2]> = LOADS.iter().map(|_| [vec![], vec![]]).collect();
    for round in 0..rounds {
        for (li, load) in LOADS.iter().enumerate() {
            let script = (load.pipeline > 1).then(|| pipeline_script(out_dir, load.pipeline));
            let mut order = [0usize, 1];
            shuffle(&mut order, (round * 17 + li) as u64 + 1);
            for si in order {
                let s = measure(cfg, SERVERS[si], *load, script.as_deref());
                eprintln!(
                    "  round {} {:<15} {:<26} {:>9.0} req/s  {:>6.2} µs CPU/req  core {:>3.0}%",
                    round + 1,
                    SERVERS[si],
                    load.label(),
                    s.rps,
                    s.cpu_us,
                    s.busy * 100.0
                );
                samples[li][si].push(s);
            }
        }
    }
    let valgrind = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let (n1, n2) = (5_000u64, 25_000u64);
    let callgrind: Vec<(&str, Vec<Option<f64>>)> = if valgrind {
        SERVERS
            .iter()
            .map(|&s| {
                let per = CALLGRIND_CONNS
                    .into_iter()
                    .map(|conns| {
                        let a = callgrind_total(cfg, s, conns, n1)?;
                        let b = callgrind_total(cfg, s, conns, n2)?;
                        Some((b - a) / (n2 - n1) as f64)
                    })
                    .collect();
                (s, per)
            })
            .collect()
    } else {
        eprintln!("bench-run: valgrind is not installed: no instruction counts");
        Vec::new()
    };
    let md = report(
        cfg,
        rounds,
        &samples,
        &callgrind,
        started.elapsed().as_secs(),
    );
    let path = out_dir.join("http.md");
    std::fs::write(&path, md).expect("write http.md");
    Some(path)
}

fn report(
    cfg: &Cfg,
    rounds: usize,
    samples: &[[Vec<Sample>; 2]],
    callgrind: &[(&str, Vec<Option<f64>>)],
    secs: u64,
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# HTTP: hyper on ringloop against hyper on tokio\n\n{}; server pinned to CPU {}, the load (wrk, one thread; `bench-load --http` for the open loop) to CPU {}; {rounds} round(s) of {} s per server and load, after {} s of warm-up, in shuffled order; {secs} s in all.\n\nOne hyper HTTP/1.1 service (`GET /` answers `Hello, World!`, 13 bytes), served by `bench-compat --server hyper-ringloop` (ringloop's `hyper` feature: hyper's `Read`/`Write` on ringloop streams, `HyperTimer`) and `--server hyper-tokio` (tokio `current_thread`, hyper-util's `TokioIo` and `TokioTimer`); the same hyper settings on both (keep-alive, `pipeline_flush`). Ratios are ringloop ÷ tokio within each round: the median, then the lowest and highest round.\n",
        crate::kernel(),
        cfg.server_cpu,
        cfg.client_cpu,
        cfg.duration,
        cfg.warmup,
    );
    if !callgrind.is_empty() {
        let _ = writeln!(md, "## User-space instructions per request (callgrind)\n\nKeep-alive `GET /` from a client thread per connection, one request in flight each; (instructions at 25,000 requests − at 5,000) ÷ 20,000. Free of the machine's noise.\n\n| server | over 16 connections | over 1 |\n|---|---|---|");
        for (s, per) in callgrind {
            let cell = |v: &Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0}"));
            let _ = writeln!(md, "| {s} | {} | {} |", cell(&per[0]), cell(&per[1]));
        }
        if let [(_, ours), (_, theirs)] = callgrind {
            let ratio = |i: usize| match (ours[i], theirs[i]) {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "n/a".into(),
            };
            let _ = writeln!(md, "| ringloop ÷ tokio | {} | {} |", ratio(0), ratio(1));
        }
        md.push('\n');
    }
    if rounds == 0 {
        return md;
    }
    let _ = writeln!(md, "## Timed rounds\n\nwrk keeps each connection's requests in flight (a closed loop), so where the servers are faster than wrk they idle, the faster one more. The open loop sends a fixed rate whatever the answers (`bench-load --http`), so both servers serve the same requests and idle between them, as most services do; it carries no aim.\n");
    let _ = writeln!(md, "| load | req/s ringloop | req/s tokio | req/s ratio | CPU µs/req ringloop | CPU µs/req tokio | CPU/req ratio | server core busy (ringloop, tokio) |\n|---|---|---|---|---|---|---|---|");
    let mut aims = Vec::new();
    for (li, load) in LOADS.iter().enumerate() {
        let [ours, theirs] = &samples[li];
        let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let (rr, rlo, rhi) = ratios(ours, theirs, |s| s.rps);
        let (cr, clo, chi) = ratios(ours, theirs, |s| s.cpu_us);
        let (busy_ours, busy_theirs) = (med(ours, |s| s.busy), med(theirs, |s| s.busy));
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {rr:.2} ({rlo:.2}–{rhi:.2}) | {:.2} | {:.2} | {cr:.2} ({clo:.2}–{chi:.2}) | {:.0}%, {:.0}% |",
            load.label(),
            med(ours, |s| s.rps),
            med(theirs, |s| s.rps),
            med(ours, |s| s.cpu_us),
            med(theirs, |s| s.cpu_us),
            busy_ours * 100.0,
            busy_theirs * 100.0,
        );
        // The open loop's req/s is its rate, and it carries no aim of the issue's: it shows
        // the CPU per request of a server that idles between requests, beside the others.
        if load.rate > 0 {
            continue;
        }
        // req/s decides only where a server's core was the limit; elsewhere wrk was.
        let core_bound = busy_theirs >= 0.9;
        aims.push((load.label(), rr, rlo, rhi, cr, clo, chi, core_bound));
    }
    let _ = writeln!(
        md,
        "\n## Against its aims\n\n| aim | load | median (range) | verdict |\n|---|---|---|---|"
    );
    let verdict = |m: f64, lo: f64, hi: f64, ok: &dyn Fn(f64) -> bool| match (ok(lo), ok(hi), ok(m))
    {
        (true, true, _) => "met",
        (false, false, _) => "missed",
        (_, _, true) => "met by the median, not in every round",
        (_, _, false) => "missed by the median, not in every round",
    };
    for (label, rr, rlo, rhi, cr, clo, chi, core_bound) in aims {
        if core_bound {
            let _ = writeln!(
                md,
                "| req/s ≥ 1.05× hyper on tokio (the server core the limit) | {label} | {rr:.2} ({rlo:.2}–{rhi:.2}) | {} |",
                verdict(rr, rlo, rhi, &|r| r >= 1.05)
            );
        } else {
            let _ = writeln!(
                md,
                "| req/s ≥ 1.05× hyper on tokio (the server core the limit) | {label} | {rr:.2} ({rlo:.2}–{rhi:.2}) | not decidable: tokio's core was under 90% busy, so wrk was the limit |"
            );
        }
        let _ = writeln!(
            md,
            "| CPU per request ≤ 0.9× hyper on tokio | {label} | {cr:.2} ({clo:.2}–{chi:.2}) | {} |",
            verdict(cr, clo, chi, &|r| r <= 0.9)
        );
    }
    md
}
