//! One sample: a server started on its CPU, the load generator on the other, and the
//! server's CPU time, memory and (with perf) system calls read around the measured window.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::steal::{steal_now, steal_share};
use crate::{Point, Sample};

#[derive(Clone)]
pub(crate) struct Cfg {
    pub(crate) bin: PathBuf,
    pub(crate) server_cpu: usize,
    pub(crate) client_cpu: usize,
    pub(crate) warmup: f64,
    pub(crate) duration: f64,
    pub(crate) perf: bool,
}

pub(crate) fn spawn_server(
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
        // Under valgrind ringloop's waits poll rather than block, so that other threads
        // run (see `valgrind_poll_interval` in `src/sys/mod.rs`). The servers measured are
        // single-threaded: they keep the blocking wait they run natively.
        c.env("RINGLOOP_VALGRIND_POLL_MS", "0");
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

pub(crate) fn proc_cpu_ticks(pid: u32) -> (u64, u64) {
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

pub(crate) fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Waits for `c` to exit by itself; kills it and returns false past `limit`.
pub(crate) fn wait_for_exit(mut c: Child, limit: Duration) -> bool {
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

pub(crate) fn kill(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

pub(crate) fn result_field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `bench-load` in timed mode against `addr` with `conns` connections, on the client CPU, its
/// output piped (it marks the measured window with `measure start` and `measure end`); the
/// caller adds what the load is.
pub(crate) fn load_command(cfg: &Cfg, addr: SocketAddr, conns: usize) -> Command {
    let mut c = Command::new(cfg.bin.join("bench-load"));
    c.args(["--addr", &addr.to_string()])
        .args(["--conns", &conns.to_string()])
        .args(["--cpu", &cfg.client_cpu.to_string()])
        .args(["--warmup", &cfg.warmup.to_string()])
        .args(["--duration", &cfg.duration.to_string()])
        .stdout(Stdio::piped());
    c
}

/// One run of `server` at `p`. With `count_syscalls`, perf counts the server's system calls
/// (a separate run: the tracepoint slows every call, so those runs give no other figure).
pub(crate) fn measure(cfg: &Cfg, server: &str, p: Point, count_syscalls: bool) -> Sample {
    let (srv, addr) = spawn_server(cfg, server, &[], &[]);
    let pid = srv.id();
    let mut load = load_command(cfg, addr, p.conns)
        .args(["--size", &p.size.to_string()])
        .args(["--depth", &p.depth.to_string()])
        .args(if p.churn { &["--churn"][..] } else { &[] })
        .args(if p.rate > 0 {
            vec!["--rate".to_string(), p.rate.to_string()]
        } else {
            vec![]
        })
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

pub(crate) fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Server memory per idle connection: RSS growth with `n` connections that each echoed one
/// byte and then went quiet.
pub(crate) fn idle_bytes(cfg: &Cfg, server: &str, n: usize) -> f64 {
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
