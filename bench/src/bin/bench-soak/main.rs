//! The soak (`bench/run --soak MINUTES`): the echo demo on two cores against a mix of clients
//! for a while, every echoed byte checked, the server's memory and descriptors sampled.
//!
//! The clients (see `clients`), all at once on one tokio thread:
//! - plain echo of random sizes up to 64 KiB on long-lived connections;
//! - slow readers: 1 MiB written while the echo is read 4 KiB at a time, with pauses;
//! - resets: part of a message sent, part of its echo read, then an RST (`SO_LINGER` 0);
//! - half-close: a message, a write shutdown, the whole echo read to end of stream;
//! - idle-timeout racers: pauses around the server's idle timeout (`--idle-timeout-ms`), so
//!   that receives are dropped by the timeout as bytes arrive;
//! - churn: a connection per request;
//! - idle connections (2,000 by default) that each send a byte every half second.
//!
//! Every class checks each echoed byte; the server may close a racer's connection (an idle
//! timeout) but never echo a wrong or missing byte. Server RSS and descriptor count are
//! sampled through `/proc`; the report gives their slope after a warm-up (the first third).
//! At the end the clients stop, the server's descriptor count must fall back to where it was
//! before they started, and SIGINT must stop it with exit 0. The exit status says whether
//! the run passed; the report goes to stdout, and to `--out FILE` too.

mod clients;
mod report;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringloop_bench::{raise_nofile, Args};

const USAGE: &str = "usage: bench-soak [--minutes M] [--demo PATH] [--threads N] \
[--idle-conns N] [--idle-timeout-ms MS] [--sample-secs S] [--out FILE]
  (defaults: 10 minutes, target/release/examples/echo_server, 2 threads, 2000 idle \
connections, 1500 ms, a sample every 10 s or every fifteenth of the run if shorter)";

/// One reading of the server's resident memory and open descriptors.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) rss_kib: u64,
    pub(crate) fds: u64,
}

fn sample(pid: u32, start: Instant) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Sample {
        secs: start.elapsed().as_secs_f64(),
        rss_kib,
        fds,
    })
}

/// A free loopback port (the demo's cores each bind it with `SO_REUSEPORT`).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe socket");
    l.local_addr().expect("its address").port()
}

fn start_demo(demo: &str, addr: &str, threads: usize, idle_ms: u64) -> Child {
    let mut child = Command::new(demo)
        .args(["--addr", addr, "--threads", &threads.to_string()])
        .args(["--idle-timeout-ms", &idle_ms.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            eprintln!("bench-soak: cannot start {demo}: {e} (bench/run --soak builds it)");
            std::process::exit(2)
        });
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
    out.read_line(&mut line).expect("the demo's first line");
    if !line.contains("listening") {
        eprintln!("bench-soak: the demo did not start: {line:?}");
        std::process::exit(1)
    }
    // The rest of its output (the summary at the end) is read after it exits.
    child.stdout = None;
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            println!("  demo: {l}");
        }
    });
    child
}

fn main() {
    let args = Args::parse(
        USAGE,
        &[
            "minutes",
            "demo",
            "threads",
            "idle-conns",
            "idle-timeout-ms",
            "sample-secs",
            "out",
        ],
    );
    let minutes: f64 = args.get("minutes", 10.0);
    let run = Duration::from_secs_f64(minutes * 60.0);
    let demo = args
        .str("demo")
        .unwrap_or("target/release/examples/echo_server")
        .to_owned();
    let threads: usize = args.get("threads", 2);
    let mut idle_conns: usize = args.get("idle-conns", 2000);
    let idle_ms: u64 = args.get("idle-timeout-ms", 1500);
    let every =
        Duration::from_secs_f64(args.get("sample-secs", (run.as_secs_f64() / 15.0).min(10.0)));
    raise_nofile();
    // The server and this process each hold one descriptor per idle connection, plus a few
    // hundred for the other clients at most: a machine with a low limit runs fewer.
    let limit = nofile_limit();
    if idle_conns + 300 > limit {
        let fewer = limit.saturating_sub(300);
        println!(
            "bench-soak: descriptor limit {limit}: {fewer} idle connections, not {idle_conns}"
        );
        idle_conns = fewer;
    }

    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = start_demo(&demo, &addr, threads, idle_ms);
    let pid = server.id();
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let baseline = sample(pid, start).expect("read the server's /proc entries");

    let sampler = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || {
            let mut out = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(x) = sample(pid, start) {
                    out.push(x);
                }
                std::thread::sleep(every);
            }
            out
        });
        (stop, h)
    };
    let clients_from = start.elapsed().as_secs_f64();
    let counts = clients::run(
        addr.parse().expect("a socket address"),
        run,
        idle_conns,
        Duration::from_millis(idle_ms),
    );
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.1.join().expect("the sampler thread");

    // Every client has closed: the server's descriptors must come back to where they were.
    let settle = Instant::now();
    let mut after = sample(pid, start);
    while after.is_some_and(|a| a.fds != baseline.fds) && settle.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
        after = sample(pid, start);
    }
    // SAFETY: plain kill(2) of our child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let exit = wait_exit(&mut server, Duration::from_secs(30));
    let rep = report::Report {
        minutes,
        run_secs: clients_from + run.as_secs_f64(),
        threads,
        idle_conns,
        idle_ms,
        counts,
        baseline,
        samples,
        after,
        exit,
    };
    let text = rep.render();
    println!("{text}");
    if let Some(out) = args.str("out") {
        std::fs::write(out, &text).expect("write the report");
    }
    std::process::exit(if rep.passed() { 0 } else { 1 })
}

/// The soft descriptor limit (after `raise_nofile`), which the server inherits.
fn nofile_limit() -> usize {
    // SAFETY: `lim` is a valid rlimit for the call to write.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// The server's exit code, or `None` if it had not exited in `limit` (it is then killed).
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}
