//! The hypervisor's steal on the CPUs a sample runs on: read from /proc/stat around each
//! sample, and waited out (probed with a ping-pong between the two CPUs) before a sample is
//! measured again.

use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::measure::Cfg;
use crate::report::STEAL_BUSY;

/// Steal and total ticks summed over `cpus`, from the text of /proc/stat (its `cpuN` lines:
/// user nice system idle iowait irq softirq steal ...; guest time is inside user already).
/// `None` if a CPU's line is missing or has no steal field (Linux before 2.6.11).
pub(crate) fn cpu_steal_ticks(stat: &str, cpus: &[usize]) -> Option<(u64, u64)> {
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
pub(crate) fn steal_share(start: Option<(u64, u64)>, end: Option<(u64, u64)>) -> Option<f64> {
    match (start, end) {
        (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
            Some(s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        }
        _ => None,
    }
}

/// How long each probe of [`wait_out_steal`] lasts.
pub(crate) const STEAL_PROBE: Duration = Duration::from_secs(1);

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
pub(crate) fn wait_out_steal(cfg: &Cfg, limit: Duration) -> Duration {
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
pub(crate) fn ping_pong(a: usize, b: usize, length: Duration) -> std::io::Result<()> {
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
pub(crate) fn steal_now(cfg: &Cfg) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut cpus = vec![cfg.server_cpu];
    if cfg.client_cpu != cfg.server_cpu {
        cpus.push(cfg.client_cpu);
    }
    cpu_steal_ticks(&stat, &cpus)
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
}
