//! The soak's verdict and its report: what each client class did, the server's memory and
//! descriptors over the run, and whether the run passed.

use std::fmt::Write;

use crate::clients::Counts;
use crate::Sample;

/// Growth of the server's RSS from the end of the warm-up to the end of the run that still
/// passes: the larger of this many KiB and a tenth. Pool buffers, allocator caches and the
/// idle connections' state are all in place by the end of a long run's warm-up.
const RSS_GROWTH_KIB: u64 = 8 * 1024;

/// Runs shorter than this are judged by [`RSS_CEILING_KIB`] instead: their warm-up is too
/// short for every pool buffer to have been touched (two cores' pools are 32 MiB).
const SHORT_RUN_SECS: f64 = 180.0;

/// A short run's bound on the server's RSS above its start: both cores' pools, the idle
/// connections' state, and as much again. A leak of a kilobyte per connection passes it
/// within seconds.
const RSS_CEILING_KIB: u64 = 64 * 1024;

pub(crate) struct Report {
    pub(crate) minutes: f64,
    /// How long the clients ran, seconds from the first sample's clock.
    pub(crate) run_secs: f64,
    pub(crate) threads: usize,
    pub(crate) idle_conns: usize,
    pub(crate) idle_ms: u64,
    pub(crate) counts: Counts,
    /// Before the clients started.
    pub(crate) baseline: Sample,
    /// Through the run.
    pub(crate) samples: Vec<Sample>,
    /// After the clients stopped and the server's descriptors settled (or 10 s passed).
    pub(crate) after: Option<Sample>,
    /// The server's exit code after SIGINT (`None`: it did not exit).
    pub(crate) exit: Option<i32>,
}

/// Least-squares slope of `y` over `x`, per unit of `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

impl Report {
    /// The samples after the warm-up (the first third of the run) and before the clients
    /// began to close at the end.
    fn steady(&self) -> &[Sample] {
        let from = self
            .samples
            .iter()
            .position(|s| s.secs >= self.run_secs / 3.0)
            .unwrap_or(self.samples.len());
        let to = self
            .samples
            .iter()
            .rposition(|s| s.secs <= self.run_secs)
            .map_or(from, |i| (i + 1).max(from));
        &self.samples[from..to]
    }

    fn errors(&self) -> u64 {
        self.counts.values().map(|c| c.errors).sum()
    }

    fn short(&self) -> bool {
        self.minutes * 60.0 < SHORT_RUN_SECS
    }

    /// RSS growth, KiB, and the bound it must stay within: over the steady part for a long
    /// run, from before the clients for a short one.
    fn rss_growth(&self) -> (i64, u64) {
        let st = self.steady();
        let (Some(first), Some(last)) = (st.first(), st.last()) else {
            return (0, RSS_GROWTH_KIB);
        };
        if self.short() {
            let peak = self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
            return (peak as i64 - self.baseline.rss_kib as i64, RSS_CEILING_KIB);
        }
        (
            last.rss_kib as i64 - first.rss_kib as i64,
            RSS_GROWTH_KIB.max(first.rss_kib / 10),
        )
    }

    fn fds_back(&self) -> bool {
        self.after.is_some_and(|a| a.fds == self.baseline.fds)
    }

    pub(crate) fn passed(&self) -> bool {
        let (grew, bound) = self.rss_growth();
        self.errors() == 0 && self.exit == Some(0) && self.fds_back() && grew <= bound as i64
    }

    pub(crate) fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# Soak: the echo demo on {} cores, {} minute(s)\n",
            self.threads, self.minutes
        );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let _ = writeln!(
            o,
            "Linux {}, {} CPUs; clients and server on the same machine, over loopback.\n",
            kernel.trim(),
            std::thread::available_parallelism().map_or(0, usize::from),
        );
        let _ = writeln!(
            o,
            "{} idle connections (a byte every {} ms), the demo's idle timeout {} ms.\n",
            self.idle_conns,
            self.idle_ms / 3,
            self.idle_ms
        );
        let _ = writeln!(
            o,
            "| clients | exchanges checked | bytes checked | injected | errors |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|");
        for (name, c) in &self.counts {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} |",
                c.requests, c.bytes, c.injected, c.errors
            );
        }
        for (name, c) in &self.counts {
            for e in &c.first_errors {
                let _ = writeln!(o, "\n- {name}: {e}");
            }
        }
        let st = self.steady();
        let per_min = |f: fn(&Sample) -> f64| {
            slope(&st.iter().map(|s| (s.secs / 60.0, f(s))).collect::<Vec<_>>())
        };
        let _ = writeln!(
            o,
            "\nServer, sampled {} times: RSS {} → {} KiB, descriptors {} → {} (before the \
             clients: {} KiB, {} descriptors).",
            self.samples.len(),
            st.first().map_or(0, |s| s.rss_kib),
            st.last().map_or(0, |s| s.rss_kib),
            st.first().map_or(0, |s| s.fds),
            st.last().map_or(0, |s| s.fds),
            self.baseline.rss_kib,
            self.baseline.fds,
        );
        let (grew, bound) = self.rss_growth();
        let _ = writeln!(
            o,
            "After the warm-up (the first third): RSS slope {:.1} KiB/min, descriptor slope \
             {:.1}/min.",
            per_min(|s| s.rss_kib as f64),
            per_min(|s| s.fds as f64),
        );
        let _ = writeln!(
            o,
            "{}: {grew} KiB (bound {bound} KiB).",
            if self.short() {
                "A short run, judged by its peak RSS above the start (the pools fill during it)"
            } else {
                "RSS growth after the warm-up"
            }
        );
        let _ = writeln!(
            o,
            "Clients gone: descriptors {} (before: {}); SIGINT: exit {}.",
            self.after
                .map_or("unreadable".to_owned(), |a| a.fds.to_string()),
            self.baseline.fds,
            self.exit
                .map_or("none (killed)".to_owned(), |c| c.to_string()),
        );
        let _ = writeln!(
            o,
            "\n**{}**",
            if self.passed() { "passed" } else { "FAILED" }
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: f64, rss_kib: u64, fds: u64) -> Sample {
        Sample { secs, rss_kib, fds }
    }

    fn report(minutes: f64, rss: &[u64]) -> Report {
        let run_secs = minutes * 60.0;
        let step = run_secs / (rss.len() - 1) as f64;
        Report {
            minutes,
            run_secs,
            threads: 2,
            idle_conns: 10,
            idle_ms: 1500,
            counts: Counts::new(),
            baseline: sample(0.0, 1000, 17),
            samples: rss
                .iter()
                .enumerate()
                .map(|(i, r)| sample(i as f64 * step, *r, 27))
                .collect(),
            after: Some(sample(run_secs + 1.0, 1000, 17)),
            exit: Some(0),
        }
    }

    #[test]
    fn slope_of_a_line_is_its_gradient() {
        let pts: Vec<_> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&pts) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_long_run_fails_on_growth_after_its_warm_up_only() {
        // Growth during the warm-up (the pools filling) passes; a leak after it fails.
        let flat = report(10.0, &[1000, 30000, 40000, 40000, 40100, 40100, 40200]);
        assert!(flat.passed(), "{}", flat.render());
        let leak = report(10.0, &[1000, 40000, 40000, 45000, 50000, 55000, 60000]);
        assert!(!leak.passed(), "{}", leak.render());
    }

    #[test]
    fn a_short_run_is_judged_by_its_peak() {
        assert!(report(0.5, &[1000, 20000, 30000, 34000]).passed());
        assert!(!report(0.5, &[1000, 30000, 60000, 90000]).passed());
    }

    #[test]
    fn descriptors_not_back_or_an_error_fail() {
        let mut r = report(10.0, &[1000, 40000, 40000, 40000]);
        r.after = Some(sample(700.0, 1000, 18));
        assert!(!r.passed());
        let mut r = report(10.0, &[1000, 40000, 40000, 40000]);
        r.counts.entry("echo").or_default().errors = 1;
        assert!(!r.passed());
    }
}
