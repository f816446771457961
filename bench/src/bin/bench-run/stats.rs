//! Medians and round-by-round ratios of samples: what the report, the aims and the raw file
//! compute their figures with.

use std::collections::BTreeMap;

use crate::Sample;

/// ringloop ÷ `peer` at point `pi` for figure `f`, round by round: the median, lowest and
/// highest over the rounds and how many rounds, or `None` if either server has no sample
/// there.
pub(crate) fn paired_ratios(
    samples: &BTreeMap<(usize, &str), Vec<Sample>>,
    pi: usize,
    peer: &str,
    f: &dyn Fn(&Sample) -> f64,
) -> Option<(f64, f64, f64, usize)> {
    paired_ratios_of(samples, pi, "ringloop", peer, f)
}

/// [`paired_ratios`] of `subject` rather than `ringloop`.
pub(crate) fn paired_ratios_of(
    samples: &BTreeMap<(usize, &str), Vec<Sample>>,
    pi: usize,
    subject: &str,
    peer: &str,
    f: &dyn Fn(&Sample) -> f64,
) -> Option<(f64, f64, f64, usize)> {
    let ours = samples.get(&(pi, subject))?;
    let theirs = samples.get(&(pi, peer))?;
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| f(a) / f(b))
        .filter(|r| r.is_finite())
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = ratios.len();
    Some((median(ratios), lo, hi, n))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
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

pub(crate) fn median_sample(v: &[Sample]) -> Sample {
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
        steal: {
            let known: Vec<f64> = v.iter().filter_map(|s| s.steal).collect();
            (!known.is_empty()).then(|| median(known))
        },
    }
}
