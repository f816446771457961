//! Where ringloop stands against the aims the project set for it (the bars of the benchmark
//! issue), worked out from a run's own figures, so that every report, and every report
//! redrawn from an old raw file, says which it meets.
//!
//! A ratio taken round by round counts as met or missed only if every round's is: where the
//! rounds fall on both sides of the aim, the run has not decided it.

use std::fmt::Write as _;

use crate::raw::Results;
use crate::stats::paired_ratios_of;
use crate::Sample;

/// How a figure stands against an aim, worst last. For a ratio taken round by round: met or
/// missed in every round, or met or missed by the median over rounds that fall on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Met,
    MetByMedian,
    MissedByMedian,
    Missed,
}

impl Verdict {
    /// Where a figure with median `m` over rounds from `lo` to `hi` stands, for an aim `ok`
    /// that holds on one side of a bound.
    fn of_rounds(m: f64, lo: f64, hi: f64, ok: impl Fn(f64) -> bool) -> Verdict {
        match (ok(lo), ok(hi), ok(m)) {
            (true, true, _) => Verdict::Met,
            (false, false, _) => Verdict::Missed,
            (_, _, true) => Verdict::MetByMedian,
            (_, _, false) => Verdict::MissedByMedian,
        }
    }

    /// Where a single figure stands.
    fn of(v: f64, ok: impl Fn(f64) -> bool) -> Verdict {
        Verdict::of_rounds(v, v, v, ok)
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::MetByMedian => "met by the medians, not in every round",
            Verdict::MissedByMedian => "missed by the medians, not in every round",
            Verdict::Missed => "missed",
        }
    }
}

/// An aim on a ratio against `peer` at every point, round by round: `f` is the figure, `ok`
/// the aim on ringloop's over the peer's. The open loop's req/s is left out of req/s aims:
/// its rate is fixed and every server keeps it.
struct PointAim {
    aim: &'static str,
    /// The server the aim is about: `ringloop`, or a variant of it.
    subject: &'static str,
    peer: &'static str,
    f: fn(&Sample) -> f64,
    ok: fn(f64) -> bool,
    closed_only: bool,
}

const POINT_AIMS: [PointAim; 3] = [
    PointAim {
        aim: "CPU per request ≤ 0.95× tokio at every point",
        subject: "ringloop",
        peer: "tokio",
        f: Sample::cpu,
        ok: |r| r <= 0.95,
        closed_only: false,
    },
    PointAim {
        aim: "CPU per request ≤ 1.0× bare at every point",
        subject: "ringloop",
        peer: "bare",
        f: Sample::cpu,
        ok: |r| r <= 1.0,
        closed_only: false,
    },
    PointAim {
        aim: "CPU per request of the echo on tokio's traits (`ringloop-compat`) ≤ 1.15× the native echo's at every point",
        subject: "ringloop-compat",
        peer: "ringloop",
        f: Sample::cpu,
        ok: |r| r <= 1.15,
        closed_only: false,
    },
];

/// Rounds a run needs for its verdicts to count: fewer, and the medians are too easily
/// moved by one noisy round.
const DECISIVE_ROUNDS: usize = 7;

/// The section, or nothing if the run measured none of what the aims are about.
pub(crate) fn section(md: &mut String, r: &Results) {
    // Each aim gives no row where the run has none of its figures (no timed rounds, or not
    // the servers it names).
    let mut rows: Vec<(String, String, Verdict)> =
        POINT_AIMS.iter().filter_map(|a| point_aim(r, a)).collect();
    rows.extend(syscalls_aim(r));
    rows.extend(callgrind_aim(r));
    if let Some((_, b)) = r.idle.iter().find(|(s, _)| *s == "ringloop") {
        rows.push((
            "memory per idle connection ≤ 1 KiB".into(),
            format!("{b:.0} B"),
            Verdict::of(*b, |b| b <= 1024.0),
        ));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Against its aims\n\nThe bars the project set for ringloop, checked against this run's own figures. CPU per request is the figure (where the load generator's core is the ceiling, req/s says little). A ratio against a peer is taken round by round, as in the tables below, and judged by its median over the rounds, with the lowest and highest round: \"met\" or \"missed\" alone means every round agreed, and the points where the median misses are named.\n");
    if r.info.rounds < DECISIVE_ROUNDS {
        let _ = writeln!(md, "This run had {} round(s); the aims are judged on runs of {DECISIVE_ROUNDS} or more, so these verdicts are indicative only.\n", r.info.rounds);
    }
    let _ = writeln!(md, "| aim | this run | verdict |\n|---|---|---|");
    for (aim, figure, verdict) in rows {
        let _ = writeln!(md, "| {aim} | {figure} | {} |", verdict.word());
    }
    md.push('\n');
}

fn point_aim(r: &Results, a: &PointAim) -> Option<(String, String, Verdict)> {
    let (mut n, mut by_median, mut every_round) = (0, 0, 0);
    let mut verdict = Verdict::Met;
    let mut short = Vec::new();
    for (pi, p) in r.points.iter().enumerate() {
        if a.closed_only && p.rate > 0 {
            continue;
        }
        let Some((m, lo, hi, _)) = paired_ratios_of(&r.samples, pi, a.subject, a.peer, &a.f) else {
            continue;
        };
        let v = Verdict::of_rounds(m, lo, hi, a.ok);
        verdict = verdict.max(v);
        n += 1;
        match v {
            Verdict::Met => {
                every_round += 1;
                by_median += 1;
            }
            Verdict::MetByMedian => by_median += 1,
            Verdict::MissedByMedian | Verdict::Missed => {
                let range = if lo < hi {
                    format!(" ({lo:.2}–{hi:.2})")
                } else {
                    String::new()
                };
                short.push(format!("{} {m:.2}{range}", p.label()));
            }
        }
    }
    if n == 0 {
        return None;
    }
    let mut figure =
        format!("the medians meet it at {by_median} of {n} points ({every_round} in every round)");
    if !short.is_empty() {
        let _ = write!(figure, "; not at {}", short.join(", "));
    }
    Some((a.aim.into(), figure, verdict))
}

/// System calls per request against the bare io-uring server's at every point both were
/// counted at: ringloop's loop adds a scheduler, never a system call.
fn syscalls_aim(r: &Results) -> Option<(String, String, Verdict)> {
    let medians = r.medians();
    let mut verdict = Verdict::Met;
    let (mut n, mut met) = (0, 0);
    let mut short = Vec::new();
    for (pi, p) in r.points.iter().enumerate() {
        let ours = medians.get(&(pi, "ringloop")).and_then(|s| s.syscalls);
        let bare = medians.get(&(pi, "bare")).and_then(|s| s.syscalls);
        let (Some(ours), Some(bare)) = (ours, bare) else {
            continue;
        };
        n += 1;
        if ours <= bare {
            met += 1;
        } else {
            verdict = Verdict::Missed;
            short.push(format!("{} {ours:.2} against {bare:.2}", p.label()));
        }
    }
    if n == 0 {
        return None;
    }
    let mut figure = format!("met at {met} of {n} points");
    if !short.is_empty() {
        let _ = write!(figure, "; not at {}", short.join(", "));
    }
    Some((
        "system calls per request ≤ the bare io-uring server's at every point".into(),
        figure,
        verdict,
    ))
}

fn callgrind_aim(r: &Results) -> Option<(String, String, Verdict)> {
    let row = |s: &str| r.callgrind.iter().find(|(name, ..)| *name == s);
    let (_, ours_many, ours_one) = row("ringloop")?;
    let (_, tokio_many, tokio_one) = row("tokio")?;
    let mut figures = Vec::new();
    let mut verdict = Verdict::Met;
    for (what, ours, theirs) in [
        ("over 16 connections", ours_many, tokio_many),
        ("over 1", ours_one, tokio_one),
    ] {
        if let (Some(o), Some(t)) = (ours, theirs) {
            let ratio = o / t;
            figures.push(format!("{ratio:.3}× {what}"));
            verdict = verdict.max(Verdict::of(ratio, |v| v <= 0.6));
        }
    }
    if figures.is_empty() {
        return None;
    }
    Some((
        "user-space instructions per request (callgrind) ≤ 0.6× tokio".into(),
        figures.join(", "),
        verdict,
    ))
}

#[cfg(test)]
mod tests {
    use super::Verdict;

    #[test]
    fn rounds_on_both_sides_of_an_aim_leave_it_to_the_median() {
        let at_least_one = |v: f64| v >= 1.0;
        assert_eq!(
            Verdict::of_rounds(1.1, 1.01, 1.2, at_least_one),
            Verdict::Met
        );
        assert_eq!(
            Verdict::of_rounds(0.95, 0.9, 0.99, at_least_one),
            Verdict::Missed
        );
        assert_eq!(
            Verdict::of_rounds(1.02, 0.9, 1.1, at_least_one),
            Verdict::MetByMedian
        );
        assert_eq!(
            Verdict::of_rounds(0.98, 0.9, 1.1, at_least_one),
            Verdict::MissedByMedian
        );
        assert_eq!(Verdict::of(1.0, at_least_one), Verdict::Met);
    }
}
