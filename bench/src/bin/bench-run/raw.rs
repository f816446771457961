//! What a run measured ([`Results`]) and its raw file, `NAME.raw.tsv`: every sample of every
//! round, so that the report can be checked, recomputed or redrawn (`--render`) without
//! measuring again.
//!
//! One record a line, tab-separated, its kind first; `#` starts a comment line:
//! - `run KEY VALUE`: the run's facts (see [`RunInfo`]);
//! - `point ID`, `server NAME`: what the run covered, in report order;
//! - `sample POINT SERVER ROUND rps p50_us p99_us p999_us user sys peak_rss_kib steal` (CPU
//!   in seconds per 1M requests; steal the share of the two CPUs' time the hypervisor took,
//!   `-` if unknown; files written before it was recorded end at `peak_rss_kib`);
//! - `syscalls POINT SERVER PER_REQUEST`: the median of the counted runs;
//! - `idle SERVER BYTES`: memory per idle connection;
//! - `callgrind SERVER MANY ONE`: instructions per request over 16 connections and over 1,
//!   `-` where a count failed;
//! - `callgrind-lto SERVER MANY ONE`: the same, with the servers built by the `release-lto`
//!   profile (fat LTO, one codegen unit);
//! - `callgrind-timeout SERVER MANY ONE`: the same, each receive under a 30 s timeout;
//! - `callgrind-churn SERVER MANY ONE`: instructions per connection when each request comes
//!   on a connection of its own, 16 connections at a time and one at a time, `-` where a
//!   count failed (files written before the second was counted end at `MANY`);
//! - `micro LINE`: the microbenchmarks' markdown table, a line each.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::stats::median_sample;
use crate::{Point, Sample, SERVERS};

/// The facts of a run that its report states.
pub(crate) struct RunInfo {
    pub(crate) date: String,
    pub(crate) kernel: String,
    pub(crate) cpu: String,
    pub(crate) cpus: usize,
    pub(crate) server_cpu: usize,
    pub(crate) client_cpu: usize,
    /// Seconds measured per (server, point, round).
    pub(crate) duration: f64,
    pub(crate) rounds: usize,
    /// Counted runs per (server, point) behind each syscall median, and their length.
    pub(crate) syscall_runs: usize,
    pub(crate) syscall_secs: f64,
    /// How many times a sample with steal over `STEAL_BUSY` was measured again at most, and
    /// how many samples were (0 in files from before retries).
    pub(crate) steal_retries: usize,
    pub(crate) retried: usize,
    /// Seconds spent waiting for steal to pass before retries (0 in files from before).
    pub(crate) steal_waited: f64,
    pub(crate) quick: bool,
    /// Idle connections held for the memory figure.
    pub(crate) idle_n: usize,
    /// The two request counts whose difference gives instructions per request.
    pub(crate) callgrind_n: (u64, u64),
}

/// Everything a run measured. Samples are keyed by (index into `points`, server).
pub(crate) struct Results {
    pub(crate) info: RunInfo,
    pub(crate) points: Vec<Point>,
    pub(crate) servers: Vec<&'static str>,
    pub(crate) samples: BTreeMap<(usize, &'static str), Vec<Sample>>,
    pub(crate) syscalls: BTreeMap<(usize, &'static str), f64>,
    pub(crate) idle: Vec<(&'static str, f64)>,
    pub(crate) callgrind: Vec<(&'static str, Option<f64>, Option<f64>)>,
    /// The same, built with fat LTO (empty when not measured).
    pub(crate) callgrind_lto: Vec<(&'static str, Option<f64>, Option<f64>)>,
    /// The same, each receive under a 30 s timeout (empty when not measured).
    pub(crate) callgrind_timeout: Vec<(&'static str, Option<f64>, Option<f64>)>,
    /// Instructions per connection, a request per connection (empty when not measured).
    pub(crate) callgrind_churn: Vec<(&'static str, Option<f64>, Option<f64>)>,
    pub(crate) micro: String,
}

impl Results {
    /// Whether the run timed any echo point (`--rounds 0` times none: its report is the
    /// callgrind, idle and micro parts alone, with no chart).
    pub(crate) fn timed(&self) -> bool {
        self.info.rounds > 0
    }

    /// Per (point, server): the median of each figure over the rounds, with its syscalls.
    pub(crate) fn medians(&self) -> BTreeMap<(usize, &'static str), Sample> {
        self.samples
            .iter()
            .map(|(k, v)| {
                let mut m = median_sample(v);
                m.syscalls = self.syscalls.get(k).copied();
                (*k, m)
            })
            .collect()
    }

    /// The raw file. Numbers are written in Rust's shortest round-trip form, so reading it
    /// back gives the same report to the last digit.
    pub(crate) fn to_tsv(&self) -> String {
        let i = &self.info;
        let mut t =
            String::from("# ringloop bench-run raw results; see bench/src/bin/bench-run/raw.rs\n");
        let facts: [(&str, String); 17] = [
            ("date", i.date.clone()),
            ("kernel", i.kernel.clone()),
            ("cpu", i.cpu.clone()),
            ("cpus", i.cpus.to_string()),
            ("server_cpu", i.server_cpu.to_string()),
            ("client_cpu", i.client_cpu.to_string()),
            ("duration", i.duration.to_string()),
            ("rounds", i.rounds.to_string()),
            ("syscall_runs", i.syscall_runs.to_string()),
            ("syscall_secs", i.syscall_secs.to_string()),
            ("steal_retries", i.steal_retries.to_string()),
            ("retried", i.retried.to_string()),
            ("steal_waited", i.steal_waited.to_string()),
            ("quick", i.quick.to_string()),
            ("idle_n", i.idle_n.to_string()),
            ("callgrind_n1", i.callgrind_n.0.to_string()),
            ("callgrind_n2", i.callgrind_n.1.to_string()),
        ];
        for (k, v) in facts {
            let _ = writeln!(t, "run\t{k}\t{v}");
        }
        for p in &self.points {
            let _ = writeln!(t, "point\t{}", p.id());
        }
        for s in &self.servers {
            let _ = writeln!(t, "server\t{s}");
        }
        let opt = |v: &Option<f64>| v.map_or("-".to_owned(), |v| v.to_string());
        for ((pi, s), v) in &self.samples {
            for (round, m) in v.iter().enumerate() {
                let _ = writeln!(
                    t,
                    "sample\t{}\t{s}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    self.points[*pi].id(),
                    round + 1,
                    m.rps,
                    m.p50,
                    m.p99,
                    m.p999,
                    m.user,
                    m.sys,
                    m.peak_rss_kib,
                    opt(&m.steal)
                );
            }
        }
        for ((pi, s), v) in &self.syscalls {
            let _ = writeln!(t, "syscalls\t{}\t{s}\t{v}", self.points[*pi].id());
        }
        for (s, b) in &self.idle {
            let _ = writeln!(t, "idle\t{s}\t{b}");
        }
        for (s, many, one) in &self.callgrind {
            let _ = writeln!(t, "callgrind\t{s}\t{}\t{}", opt(many), opt(one));
        }
        for (s, many, one) in &self.callgrind_lto {
            let _ = writeln!(t, "callgrind-lto\t{s}\t{}\t{}", opt(many), opt(one));
        }
        for (s, many, one) in &self.callgrind_timeout {
            let _ = writeln!(t, "callgrind-timeout\t{s}\t{}\t{}", opt(many), opt(one));
        }
        for (s, many, one) in &self.callgrind_churn {
            let _ = writeln!(t, "callgrind-churn\t{s}\t{}\t{}", opt(many), opt(one));
        }
        for line in self.micro.lines() {
            let _ = writeln!(t, "micro\t{line}");
        }
        t
    }

    /// Reads a raw file back; the error names the line that does not parse.
    pub(crate) fn from_tsv(text: &str) -> Result<Results, String> {
        let mut facts: BTreeMap<&str, &str> = BTreeMap::new();
        let mut points: Vec<Point> = Vec::new();
        let mut servers = Vec::new();
        let mut samples: BTreeMap<(usize, &'static str), Vec<Sample>> = BTreeMap::new();
        let mut syscalls = BTreeMap::new();
        let mut idle = Vec::new();
        let mut callgrind = Vec::new();
        let mut callgrind_lto = Vec::new();
        let mut callgrind_timeout = Vec::new();
        let mut callgrind_churn = Vec::new();
        let mut micro = String::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |what: &str| format!("line {}: {what}: {line:?}", n + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| -> Result<f64, String> {
                f.get(i)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad(&format!("field {} is not a number", i + 1)))
            };
            // A count that may have failed (`-`) or, at the end of a line, not be there.
            let count = |i: usize| match f.get(i) {
                None | Some(&"-") => Ok(None),
                Some(_) => num(i).map(Some),
            };
            let server = |i: usize| -> Result<&'static str, String> {
                f.get(i)
                    .and_then(|v| SERVERS.iter().copied().find(|s| s == v))
                    .ok_or_else(|| bad("unknown server"))
            };
            let point = |i: usize, points: &[Point]| -> Result<usize, String> {
                f.get(i)
                    .and_then(|v| points.iter().position(|p| p.id() == *v))
                    .ok_or_else(|| bad("point not declared by a `point` line"))
            };
            match (f[0], f.len()) {
                ("run", 3) => {
                    facts.insert(f[1], f[2]);
                }
                ("point", 2) => points.push(Point::parse(f[1]).map_err(|e| bad(&e))?),
                ("server", 2) => servers.push(server(1)?),
                ("sample", 11 | 12) => {
                    let key = (point(1, &points)?, server(2)?);
                    let rounds = samples.entry(key).or_default();
                    // Ratios pair two servers' samples by round, so each must be in order.
                    if num(3)? != (rounds.len() + 1) as f64 {
                        return Err(bad(&format!("expected round {}", rounds.len() + 1)));
                    }
                    rounds.push(Sample {
                        rps: num(4)?,
                        p50: num(5)?,
                        p99: num(6)?,
                        p999: num(7)?,
                        user: num(8)?,
                        sys: num(9)?,
                        syscalls: None,
                        peak_rss_kib: num(10)? as u64,
                        steal: match f.get(11) {
                            None | Some(&"-") => None,
                            Some(_) => Some(num(11)?),
                        },
                    });
                }
                ("syscalls", 4) => {
                    syscalls.insert((point(1, &points)?, server(2)?), num(3)?);
                }
                ("idle", 3) => idle.push((server(1)?, num(2)?)),
                (kind @ ("callgrind" | "callgrind-lto" | "callgrind-timeout"), 4) => {
                    let row = (server(1)?, count(2)?, count(3)?);
                    match kind {
                        "callgrind" => callgrind.push(row),
                        "callgrind-lto" => callgrind_lto.push(row),
                        _ => callgrind_timeout.push(row),
                    }
                }
                ("callgrind-churn", 3 | 4) => {
                    callgrind_churn.push((server(1)?, count(2)?, count(3)?));
                }
                ("micro", _) => {
                    micro.push_str(line.strip_prefix("micro\t").unwrap_or(""));
                    micro.push('\n');
                }
                _ => return Err(bad("not a record")),
            }
        }
        let fact = |k: &str| -> Result<&str, String> {
            facts
                .get(k)
                .copied()
                .ok_or_else(|| format!("no `run\t{k}` line"))
        };
        let parse = |k: &str| -> Result<f64, String> {
            fact(k)?
                .parse()
                .map_err(|_| format!("`run\t{k}` is not a number"))
        };
        // A fact added after files were written: 0 in a file from before it.
        let later = |k: &str| -> Result<f64, String> {
            if facts.contains_key(k) {
                parse(k)
            } else {
                Ok(0.0)
            }
        };
        let info = RunInfo {
            date: fact("date")?.to_owned(),
            kernel: fact("kernel")?.to_owned(),
            cpu: fact("cpu")?.to_owned(),
            cpus: parse("cpus")? as usize,
            server_cpu: parse("server_cpu")? as usize,
            client_cpu: parse("client_cpu")? as usize,
            duration: parse("duration")?,
            rounds: parse("rounds")? as usize,
            syscall_runs: parse("syscall_runs")? as usize,
            syscall_secs: parse("syscall_secs")?,
            steal_retries: later("steal_retries")? as usize,
            retried: later("retried")? as usize,
            steal_waited: later("steal_waited")?,
            quick: fact("quick")? == "true",
            idle_n: parse("idle_n")? as usize,
            callgrind_n: (parse("callgrind_n1")? as u64, parse("callgrind_n2")? as u64),
        };
        // A run of `--rounds 0` has no samples at all; any other has every one.
        for (pi, p) in points.iter().enumerate() {
            for s in &servers {
                if info.rounds > 0 && !samples.contains_key(&(pi, *s)) {
                    return Err(format!("no samples of {s} at {}", p.id()));
                }
            }
        }
        Ok(Results {
            info,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64) -> Sample {
        Sample {
            rps,
            p50: 12.5,
            p99: 99.0,
            p999: 1000.25,
            user: 0.123456789,
            sys: 7.5,
            syscalls: None,
            peak_rss_kib: 6656,
            steal: Some(0.0125),
        }
    }

    fn results() -> Results {
        let mut samples = BTreeMap::new();
        samples.insert(
            (0, "ringloop"),
            vec![sample(100.0), sample(300.0), sample(200.0)],
        );
        samples.insert(
            (0, "tokio"),
            vec![sample(50.0), sample(400.0), sample(100.0)],
        );
        Results {
            info: RunInfo {
                date: "2026-12-01".into(),
                kernel: "6.18.44".into(),
                cpu: "AMD EPYC".into(),
                cpus: 2,
                server_cpu: 0,
                client_cpu: 1,
                duration: 3.0,
                rounds: 3,
                syscall_runs: 3,
                syscall_secs: 2.0,
                steal_retries: 2,
                retried: 1,
                steal_waited: 12.5,
                quick: false,
                idle_n: 10_000,
                callgrind_n: (5000, 25000),
            },
            points: vec![crate::POINTS[1]],
            servers: vec!["ringloop", "tokio"],
            samples,
            syscalls: [((0, "ringloop"), 0.627)].into_iter().collect(),
            idle: vec![("ringloop", 568.0)],
            callgrind: vec![("ringloop", Some(1214.5), None)],
            callgrind_lto: vec![
                ("ringloop", Some(1129.1), Some(1790.0)),
                ("tokio", None, Some(1210.0)),
            ],
            callgrind_timeout: vec![("ringloop", Some(1362.0), Some(1715.0))],
            callgrind_churn: vec![
                ("ringloop", Some(4199.0), Some(4946.0)),
                ("tokio", None, Some(14000.0)),
            ],
            micro: "| a | b |\n|---|---|\n".into(),
        }
    }

    #[test]
    fn the_raw_file_reads_back_to_the_same_report() {
        let r = results();
        let back = Results::from_tsv(&r.to_tsv()).unwrap();
        assert_eq!(back.to_tsv(), r.to_tsv());
        assert_eq!(
            crate::report::report(&back, "latest"),
            crate::report::report(&r, "latest")
        );
        assert_eq!(back.medians()[&(0, "ringloop")].syscalls, Some(0.627));
        assert!(crate::report::report(&r, "latest").contains("median 1.2%, highest 1.2%."));
    }

    #[test]
    fn churn_counts_over_one_connection_get_their_column_and_old_files_keep_theirs() {
        let r = results();
        let md = crate::report::report(&r, "latest");
        assert!(
            md.contains("| server | instructions/connection, 16 at a time | ringloop ÷ this | instructions/connection, 1 at a time | ringloop ÷ this |"),
            "{md}"
        );
        assert!(md.contains("| tokio | failed | — | 14000 | 0.35 |"), "{md}");
        // A file from before the count over one connection: one count a line.
        let old: String = r
            .to_tsv()
            .lines()
            .map(|l| match l.strip_prefix("callgrind-churn\t") {
                Some(rest) => format!("callgrind-churn\t{}\n", rest.rsplit_once('\t').unwrap().0),
                None => format!("{l}\n"),
            })
            .collect();
        assert!(old.contains("callgrind-churn\tringloop\t4199\n"), "{old}");
        let md = crate::report::report(&Results::from_tsv(&old).unwrap(), "latest");
        assert!(
            md.contains("| server | instructions/connection | ringloop ÷ this |\n|---|---:|---:|\n| ringloop | 4199 | — |\n| tokio | failed | — |"),
            "{md}"
        );
    }

    #[test]
    fn the_report_checks_the_aims_against_the_runs_own_figures() {
        let mut r = results();
        r.callgrind.push(("tokio", Some(1800.0), Some(1700.0)));
        let md = crate::report::report(&r, "latest");
        // CPU per request is the figure: no aim on req/s.
        assert!(!md.contains("| req/s ≥"), "{md}");
        // The same CPU per request in every round: 1.0, above the aim each time.
        assert!(md.contains("| CPU per request ≤ 0.95× tokio at every point | the medians meet it at 0 of 1 points (0 in every round); not at 64 × 64 B 1.00 | missed |"), "{md}");
        // No bare server in the run: no aims against it.
        assert!(!md.contains("bare"), "{md}");
        // Over 16 connections 1214.5 ÷ 1800; over one, ringloop's count failed.
        assert!(md.contains("| user-space instructions per request (callgrind) ≤ 0.6× tokio | 0.675× over 16 connections | missed |"), "{md}");
        assert!(
            md.contains("| memory per idle connection ≤ 1 KiB | 568 B | met |"),
            "{md}"
        );
        // Three rounds: the verdicts are said to be indicative only.
        assert!(md.contains("This run had 3 round(s)"), "{md}");
    }

    #[test]
    fn system_calls_are_held_to_the_bare_servers_at_each_point() {
        let mut r = results();
        r.servers.push("bare");
        r.samples.insert(
            (0, "bare"),
            vec![sample(100.0), sample(300.0), sample(200.0)],
        );
        r.syscalls.insert((0, "bare"), 0.55);
        let md = crate::report::report(&r, "latest");
        assert!(md.contains("| system calls per request ≤ the bare io-uring server's at every point | met at 0 of 1 points; not at 64 × 64 B 0.63 against 0.55 | missed |"), "{md}");
        r.syscalls.insert((0, "bare"), 0.7);
        let md = crate::report::report(&r, "latest");
        assert!(md.contains("| system calls per request ≤ the bare io-uring server's at every point | met at 1 of 1 points | met |"), "{md}");
    }

    #[test]
    fn peers_and_ringloops_own_variants_get_a_table_each() {
        let mut r = results();
        r.servers.push("ringloop-batch");
        r.samples.insert(
            (0, "ringloop-batch"),
            vec![sample(100.0), sample(300.0), sample(200.0)],
        );
        let md = crate::report::report(&r, "latest");
        // A section: from its heading to the next one.
        let section = |head: &str| {
            let from = md
                .find(head)
                .unwrap_or_else(|| panic!("no {head:?} in {md}"));
            let rest = &md[from + head.len()..];
            rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
        };
        let peers = section("## ringloop against each peer");
        let own = section("## ringloop against its own variants");
        assert!(peers.contains("| req/s ÷ tokio | CPU ÷ tokio |"), "{peers}");
        assert!(!peers.contains("ringloop-batch"), "{peers}");
        assert!(
            own.contains("| req/s ÷ ringloop-batch | CPU ÷ ringloop-batch |"),
            "{own}"
        );
        assert!(!own.contains("tokio"), "{own}");
    }

    #[test]
    fn a_sample_line_from_before_steal_was_recorded_still_reads() {
        let t = results().to_tsv();
        let old: String = t
            .lines()
            .map(|l| match l.strip_prefix("sample\t") {
                Some(_) => l.rsplit_once('\t').unwrap().0.to_owned() + "\n",
                None => l.to_owned() + "\n",
            })
            .collect();
        assert_ne!(old, t);
        let back = Results::from_tsv(&old).unwrap();
        assert_eq!(back.samples[&(0, "ringloop")][1].rps, 300.0);
        assert!(back.samples.values().flatten().all(|s| s.steal.is_none()));
        assert!(!crate::report::report(&back, "latest").contains("steal"));
    }

    #[test]
    fn the_time_spent_waiting_out_steal_is_kept_and_reported() {
        let r = results();
        let md = crate::report::report(&Results::from_tsv(&r.to_tsv()).unwrap(), "latest");
        assert!(md.contains("12 s of waiting in all"), "{md}");
        // A file from before the wait: none reported.
        let old: String = r
            .to_tsv()
            .lines()
            .filter(|l| !l.starts_with("run\tsteal_waited\t"))
            .map(|l| l.to_owned() + "\n")
            .collect();
        let back = Results::from_tsv(&old).unwrap();
        assert_eq!(back.info.steal_waited, 0.0);
        assert!(!crate::report::report(&back, "latest").contains("waiting"));
    }

    #[test]
    fn a_run_without_timed_rounds_reports_the_callgrind_figures_alone() {
        let mut r = results();
        r.samples.clear();
        r.syscalls.clear();
        r.info.rounds = 0;
        let md = crate::report::report(&Results::from_tsv(&r.to_tsv()).unwrap(), "partial");
        assert!(md.contains("no timed rounds"), "{md}");
        assert!(
            md.contains("| ringloop | 1214 |") || md.contains("| ringloop | 1215 |"),
            "{md}"
        );
        assert!(
            !md.contains("## Every figure") && !md.contains("partial.svg"),
            "{md}"
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let mut t = results().to_tsv();
        t.push_str("sample\t64x64\ttokio\t4\tfast\n");
        let e = Results::from_tsv(&t).err().unwrap();
        assert!(e.contains("line ") && e.contains("fast"), "{e}");
        let e = Results::from_tsv("server\tnginx\n").err().unwrap();
        assert!(e.contains("unknown server"), "{e}");
        // A round out of order would pair the wrong samples.
        let t = results()
            .to_tsv()
            .replacen("\tringloop\t2\t", "\tringloop\t3\t", 1);
        let e = Results::from_tsv(&t).err().unwrap();
        assert!(e.contains("expected round 2"), "{e}");
    }
}
