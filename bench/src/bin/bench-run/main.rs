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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringloop_bench::{raise_nofile, Args};

mod aims;
mod callgrind;
mod http;
mod measure;
mod points;
mod raw;
mod report;
mod stats;
mod steal;

use callgrind::{build_lto, callgrind_per_conn, callgrind_rows};
use measure::{idle_bytes, measure, Cfg};
use points::{Point, Sample, POINTS};
use raw::{Results, RunInfo};
use report::STEAL_BUSY;
use stats::median;
use steal::{wait_out_steal, STEAL_WAIT_MAX};

const SERVERS: [&str; 13] = [
    "ringloop",
    "ringloop-batch",
    "ringloop-spin",
    "ringloop-basic",
    "ringloop-awaited",
    "ringloop-compat",
    "tokio",
    "monoio",
    "bare",
    "ringloop-64k",
    "ringloop-awaited-64k",
    "ringloop-256k",
    "ringloop-awaited-256k",
];

/// Servers measured only when `--servers` names them: the receive-size variants, for runs
/// about large messages.
const OPT_IN: [&str; 4] = [
    "ringloop-64k",
    "ringloop-awaited-64k",
    "ringloop-256k",
    "ringloop-awaited-256k",
];

/// Servers whose code differs: `ringloop-batch`, `ringloop-spin`, `ringloop-basic` and the
/// receive-size variants are `ringloop` (or `ringloop-awaited`) with a set-up option, so the instruction counts and the idle memory, which an
/// option barely changes, are not repeated for them. (Under callgrind a spinning server
/// would count its spin, not its work.)
fn distinct(servers: &[&'static str]) -> Vec<&'static str> {
    servers
        .iter()
        .copied()
        .filter(|s| {
            !matches!(
                *s,
                "ringloop-batch"
                    | "ringloop-spin"
                    | "ringloop-basic"
                    | "ringloop-64k"
                    | "ringloop-awaited-64k"
                    | "ringloop-256k"
                    | "ringloop-awaited-256k"
            )
        })
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
    let plan = plan(&args);
    if args.flag("http") {
        match http::run(&plan.cfg, plan.rounds, &plan.out_dir) {
            Some(path) => eprintln!("bench-run: wrote {}", path.display()),
            None => std::process::exit(1),
        }
        return;
    }
    let started = Instant::now();
    eprintln!(
        "bench-run: {} rounds × {} points × {} servers, {} s each; server on CPU {}, load on CPU {}; perf {}",
        plan.rounds,
        plan.points.len(),
        plan.servers.len(),
        plan.cfg.duration,
        plan.cfg.server_cpu,
        plan.cfg.client_cpu,
        if plan.cfg.perf { "counts syscalls" } else { "unavailable: syscalls n/a" }
    );
    let rounds = run_rounds(&plan, &args);
    let syscalls = count_syscalls(&plan, &args);
    let extras = measure_extras(&plan, &args);
    let results = results(plan.clone(), rounds, syscalls, extras);
    let name = if plan.quick {
        "quick"
    } else if plan.partial {
        "partial"
    } else {
        "latest"
    };
    let md = write_report(&results, &plan.out_dir, name);
    std::fs::write(
        plan.out_dir.join(format!("{name}.raw.tsv")),
        results.to_tsv(),
    )
    .unwrap();
    println!("{md}");
    eprintln!(
        "bench-run: wrote {} (.svg, .raw.tsv) in {:.0} s",
        plan.out_dir.join(format!("{name}.md")).display(),
        started.elapsed().as_secs_f64()
    );
}

/// What a run measures, read from its arguments.
#[derive(Clone)]
struct Plan {
    cfg: Cfg,
    quick: bool,
    rounds: usize,
    servers: Vec<&'static str>,
    points: Vec<Point>,
    /// A narrowed run (`--servers`, `--points`, `--rounds 0`): it writes `partial.md` and
    /// leaves `latest.md` alone.
    partial: bool,
    out_dir: PathBuf,
    cpus: usize,
}

fn plan(args: &Args) -> Plan {
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
        .filter(|s| args.str("servers").is_some() || !OPT_IN.contains(s))
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
    Plan {
        cfg,
        quick,
        rounds,
        servers,
        points,
        partial,
        out_dir,
        cpus,
    }
}

/// The timed rounds: every server at every point, in shuffled order, each round.
struct Rounds {
    samples: BTreeMap<(usize, &'static str), Vec<Sample>>,
    steal_retries: usize,
    /// Samples measured again for the hypervisor's steal.
    retried: usize,
    steal_waited: Duration,
}

fn run_rounds(plan: &Plan, args: &Args) -> Rounds {
    let steal_retries: usize = args.get("steal-retries", if plan.quick { 0 } else { 2 });
    // What the whole run may spend waiting for steal to pass before retries, at most
    // `STEAL_WAIT_MAX` each: on a host stolen from all along, the run still ends.
    let steal_wait_budget =
        Duration::from_secs_f64(args.get("steal-wait", if plan.quick { 0.0 } else { 900.0 }));
    let mut steal_waited = Duration::ZERO;
    let mut retried = 0;
    let mut samples: BTreeMap<(usize, &str), Vec<Sample>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for (pi, p) in plan.points.iter().enumerate() {
            let mut order = plan.servers.clone();
            shuffle(&mut order, (round * 31 + pi) as u64 + 1);
            for s in order {
                // A sample the hypervisor stole from is measured again, up to `steal_retries`
                // times, and the least-stolen attempt is kept: the same rule for every
                // server, decided by the host's figure, never by the server's.
                let take = |attempt: usize| {
                    let sample = measure(&plan.cfg, s, *p, false);
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
                        let waited = wait_out_steal(&plan.cfg, left.min(STEAL_WAIT_MAX));
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
    Rounds {
        samples,
        steal_retries,
        retried,
        steal_waited,
    }
}

/// System calls per request, counted by perf in runs of their own.
struct Syscalls {
    per_request: BTreeMap<(usize, &'static str), f64>,
    runs: usize,
    secs: f64,
}

fn count_syscalls(plan: &Plan, args: &Args) -> Syscalls {
    // Syscall counts move between runs (how many completions one io_uring_enter gathers
    // depends on timing): the median of several counted runs, each shorter than a timed one.
    let syscall_runs: usize = if plan.rounds == 0 {
        0
    } else {
        args.get("syscall-runs", if plan.quick { 1 } else { 3 })
    };
    let syscall_secs = plan.cfg.duration.min(2.0);
    let mut syscalls = BTreeMap::new();
    if plan.cfg.perf && syscall_runs > 0 {
        let counted_cfg = Cfg {
            duration: syscall_secs,
            ..plan.cfg.clone()
        };
        for (pi, p) in plan.points.iter().enumerate() {
            for s in &plan.servers {
                let counts: Vec<f64> = (0..syscall_runs)
                    .filter_map(|_| measure(&counted_cfg, s, *p, true).syscalls)
                    .collect();
                if !counts.is_empty() {
                    syscalls.insert((pi, *s), median(counts));
                }
            }
        }
    }

    Syscalls {
        per_request: syscalls,
        runs: syscall_runs,
        secs: syscall_secs,
    }
}

/// What is measured besides the timed rounds: memory per idle connection, callgrind's
/// instruction counts, the microbenchmarks.
struct Extras {
    idle_n: usize,
    idle: Vec<(&'static str, f64)>,
    callgrind_n: (u64, u64),
    callgrind: Vec<(&'static str, Option<f64>, Option<f64>)>,
    callgrind_timeout: Vec<(&'static str, Option<f64>, Option<f64>)>,
    callgrind_churn: Vec<(&'static str, Option<f64>, Option<f64>)>,
    callgrind_lto: Vec<(&'static str, Option<f64>, Option<f64>)>,
    micro: String,
}

fn measure_extras(plan: &Plan, args: &Args) -> Extras {
    let idle_n = if plan.quick { 1000 } else { 10_000 };
    let idle: Vec<(&str, f64)> = if args.flag("no-idle") {
        Vec::new()
    } else {
        distinct_idle(&plan.servers)
            .iter()
            .map(|s| (*s, idle_bytes(&plan.cfg, s, idle_n)))
            .collect()
    };

    let valgrind = !args.flag("no-callgrind")
        && Command::new("valgrind")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let (n1, n2) = if plan.quick {
        (1000, 3000)
    } else {
        (5000, 25000)
    };
    let callgrind = if valgrind {
        callgrind_rows(&plan.cfg, &distinct(&plan.servers), n1, n2, &[])
    } else {
        Vec::new()
    };
    // With a timer per request (a server's idle timeout), for the servers that take one. Not
    // in quick mode.
    let timed: Vec<&'static str> = plan
        .servers
        .iter()
        .copied()
        .filter(|s| matches!(*s, "ringloop" | "tokio"))
        .collect();
    let callgrind_timeout = if valgrind && !plan.quick {
        callgrind_rows(&plan.cfg, &timed, n1, n2, &["--idle-timeout-ms", "30000"])
    } else {
        Vec::new()
    };
    // A connection per request: what accepting and closing cost. In quick mode for ringloop
    // and tokio only, over fewer connections, to keep `--churn` from rotting.
    // Over 16 connections at a time, as a server sees them, and over one, where every
    // connection is a loop turn of its own and the count is exact.
    let callgrind_churn: Vec<(&'static str, Option<f64>, Option<f64>)> = if valgrind {
        let (c1, c2) = if plan.quick { (300, 900) } else { (2000, 6000) };
        distinct(&plan.servers)
            .into_iter()
            .filter(|s| !plan.quick || matches!(*s, "ringloop" | "tokio"))
            .map(|s| {
                (
                    s,
                    callgrind_per_conn(&plan.cfg, s, 16, c1, c2),
                    callgrind_per_conn(&plan.cfg, s, 1, c1, c2),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    // The same under a production-style build, which inlines across crates: it changes the
    // servers' costs by different amounts. Not in quick mode (a minute-long smoke run).
    let callgrind_lto =
        match (valgrind && !plan.quick && !args.flag("no-lto")).then(|| build_lto(&plan.cfg)) {
            // `bench-compat` is not built with this profile.
            Some(Some(lto)) => {
                let built: Vec<_> = distinct(&plan.servers)
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
        Command::new(plan.cfg.bin.join("bench-micro"))
            .args(if plan.quick { vec!["--quick"] } else { vec![] })
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };

    Extras {
        idle_n,
        idle,
        callgrind_n: (n1, n2),
        callgrind,
        callgrind_timeout,
        callgrind_churn,
        callgrind_lto,
        micro,
    }
}

/// Everything the run measured, as the report and the raw file hold it.
fn results(plan: Plan, rounds: Rounds, syscalls: Syscalls, extras: Extras) -> Results {
    Results {
        info: RunInfo {
            date: Command::new("date")
                .args(["-u", "+%Y-%m-%d"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default(),
            kernel: kernel(),
            cpu: cpu_model(),
            cpus: plan.cpus,
            server_cpu: plan.cfg.server_cpu,
            client_cpu: plan.cfg.client_cpu,
            duration: plan.cfg.duration,
            rounds: plan.rounds,
            syscall_runs: syscalls.runs,
            syscall_secs: syscalls.secs,
            steal_retries: rounds.steal_retries,
            retried: rounds.retried,
            steal_waited: rounds.steal_waited.as_secs_f64(),
            quick: plan.quick,
            idle_n: extras.idle_n,
            callgrind_n: extras.callgrind_n,
        },
        points: plan.points,
        servers: plan.servers,
        samples: rounds.samples,
        syscalls: syscalls.per_request,
        idle: extras.idle,
        callgrind: extras.callgrind,
        callgrind_lto: extras.callgrind_lto,
        callgrind_timeout: extras.callgrind_timeout,
        callgrind_churn: extras.callgrind_churn,
        micro: extras.micro,
    }
}
