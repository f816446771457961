//! The report (`NAME.md`) and the chart (`NAME.svg`) of a run, made from its [`Results`]
//! alone, so a run read back from its raw file renders the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::raw::Results;
use crate::stats::{median, paired_ratios};
use crate::Sample;

/// [`paired_ratios`](crate::stats::paired_ratios) as "median (lowest–highest)", or the median alone from one round.
fn paired(
    samples: &BTreeMap<(usize, &str), Vec<Sample>>,
    pi: usize,
    peer: &str,
    f: &dyn Fn(&Sample) -> f64,
) -> String {
    match paired_ratios(samples, pi, peer, f) {
        None => "—".into(),
        Some((m, lo, hi, n)) if n > 1 => format!("{m:.2} ({lo:.2}–{hi:.2})"),
        Some((m, ..)) => format!("{m:.2}"),
    }
}

/// Steal in one sample above which the report says the host was busy.
pub(crate) const STEAL_BUSY: f64 = 0.05;

/// What each server is, for the report's glossary: only those in the run are named.
const SERVER_NOTES: [(&str, &str); 13] = [
    ("ringloop", "this crate, multishot accept/recv, the `RecvBuf` echoed back with `write_queued`, which resolves once the loop holds it"),
    ("ringloop-batch", "the same with `Builder::batch_wait` at 100 µs: waits gather completions in bunches, opt-in"),
    ("ringloop-spin", "the same with `Builder::spin_before_sleep` at 30 µs: a loop with nothing to run watches its rings that long before it sleeps, opt-in; its CPU includes the spinning"),
    ("ringloop-basic", "the same on a ring set up with no `DEFER_TASKRUN` or `COOP_TASKRUN`, as monoio sets up its own: the kernel interrupts the thread to post completions, so each enter finds more of them"),
    ("ringloop-awaited", "the same awaiting each reply's completion with `write_all`: one more task wake-up per request"),
    ("ringloop-compat", "the tokio server's echo (an 8 KiB buffer, `read` then `write_all` through tokio's `AsyncRead`/`AsyncWrite`) on ringloop streams through the `tokio-io` feature: what the compat layer's copies cost"),
    ("tokio", "current_thread"),
    ("monoio", "io_uring driver"),
    ("bare", "the io-uring crate by hand: multishot accept and recv, a buffer ring, no executor"),
    ("ringloop-64k", "`ringloop` with 64 KiB pool buffers (`Builder::recv_buffers(1024, 65536)`) rather than 16 KiB: a large message in fewer receives and sends"),
    ("ringloop-awaited-64k", "`ringloop-awaited` with 64 KiB pool buffers, as `ringloop-64k`"),
    ("ringloop-256k", "`ringloop` with 256 KiB pool buffers (`Builder::recv_buffers(1024, 262144)`), four times the default: a large message in fewer receives and sends"),
    ("ringloop-awaited-256k", "`ringloop-awaited` with 256 KiB pool buffers, as `ringloop-256k`"),
];

/// The markdown report of `r`; `name` is the stem of the files it is written to.
pub(crate) fn report(r: &Results, name: &str) -> String {
    let info = &r.info;
    let (quick, rounds) = (info.quick, info.rounds);
    let (servers, samples) = (&r.servers[..], &r.samples);
    let (idle, idle_n, callgrind) = (&r.idle[..], info.idle_n, &r.callgrind[..]);
    let ((n1, n2), micro) = (info.callgrind_n, r.micro.as_str());
    let mut md = String::new();
    let date = &info.date;
    let _ = writeln!(
        md,
        "# ringloop echo benchmark{}\n",
        if quick {
            " (quick mode: not for reading)"
        } else {
            ""
        }
    );
    // `--rounds 0`: the figures free of the machine's noise only, which a noisy host can
    // still refresh.
    let timed = r.timed();
    let rounds_text = if timed {
        format!("{rounds} round(s) of {} s per (server, point), servers in shuffled order each round; medians over the rounds", info.duration)
    } else {
        "no timed rounds (`--rounds 0`): the echo points were not measured, only the parts not skipped of the rest, of which callgrind's instruction counts are free of the machine's noise".to_owned()
    };
    let _ = writeln!(
        md,
        "{date}; Linux {}; {} × {}; server pinned to CPU {}, load generator to CPU {}; {rounds_text}.\n",
        info.kernel,
        info.cpus,
        info.cpu,
        info.server_cpu,
        info.client_cpu,
    );
    let steal: Vec<f64> = samples.values().flatten().filter_map(|s| s.steal).collect();
    if !steal.is_empty() {
        let high = steal.iter().copied().fold(0.0, f64::max);
        let mut retries = String::new();
        if info.steal_retries > 0 {
            let _ = write!(
                retries,
                " A sample with more than {:.0}% was measured again, up to {} more time(s), and the least-stolen attempt kept: {} of {} were.",
                STEAL_BUSY * 100.0,
                info.steal_retries,
                info.retried,
                steal.len()
            );
        }
        if info.steal_waited > 0.0 {
            let _ = write!(
                retries,
                " Before each retry the run waited for the steal to pass, ping-ponging a byte between the two CPUs until a second of that saw no more than that stolen (for {} s at most): {:.0} s of waiting in all.",
                crate::steal::STEAL_WAIT_MAX.as_secs(),
                info.steal_waited
            );
        }
        let _ = writeln!(
            md,
            "Steal (the share of the two CPUs' time the hypervisor gave to other guests while a sample was measured), in the samples kept: median {:.1}%, highest {:.1}%.{retries}{}\n",
            median(steal.clone()) * 100.0,
            high * 100.0,
            if high > STEAL_BUSY {
                " Samples taken under steal like that are slowed by the host, not the server: read this run's ratios with that in mind, and refresh `latest` from a quiet host."
            } else {
                ""
            }
        );
    }
    crate::aims::section(&mut md, r);
    let known: Vec<String> = SERVER_NOTES
        .iter()
        .filter(|(name, _)| servers.contains(name))
        .map(|(name, note)| format!("`{name}` ({note})"))
        .collect();
    if timed {
        timed_tables(&mut md, r, &known);
    } else {
        let _ = writeln!(md, "Servers: {}.", known.join(", "));
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
        let _ = writeln!(md, "\n## User-space instructions per request (callgrind)\n\n64 B echo over 16 connections and over 1; (instructions at {n2} requests − at {n1}) ÷ {}. Free of the machine's noise: exact over one connection, within a few percent over 16 (how many requests share a loop turn varies from run to run). Over one connection a server turns its loop once per request, so per-turn costs weigh fully there; over 16, several requests share a turn.\n", n2 - n1);
        callgrind_table(&mut md, callgrind, REQUEST_COLUMNS);
    }
    if !r.callgrind_lto.is_empty() {
        let _ = writeln!(md, "\nThe same servers built with `--profile release-lto` (fat LTO, one codegen unit), as a production build may be. LTO inlines across crates, which the default release build does only for generic and `#[inline]` code, so it changes each server's cost by a different amount.\n");
        callgrind_table(&mut md, &r.callgrind_lto, REQUEST_COLUMNS);
    }
    if !r.callgrind_timeout.is_empty() {
        let _ = writeln!(md, "\nThe same echo with each receive under a 30 s timeout (`--idle-timeout-ms 30000`: `ringloop::time::timeout`, `tokio::time::timeout`), as a server's idle timeout is: a timer registered and cancelled per request.\n");
        callgrind_table(&mut md, &r.callgrind_timeout, REQUEST_COLUMNS);
    }
    if r.callgrind_churn.iter().any(|(_, _, one)| one.is_some()) {
        let _ = writeln!(md, "\nEvery 64 B request on a connection of its own (`bench-load --churn`: connect, send, read the echo, close), 16 connections at a time and one at a time: what accepting, setting up and closing a connection cost, as short-lived clients make a server pay. Instructions per connection, the difference between two runs as above. One at a time, no two connections share a loop turn and the count is exact; 16 at a time, how many share a turn varies from run to run, and the count with it (by up to a tenth).\n");
        callgrind_table(&mut md, &r.callgrind_churn, CONN_COLUMNS);
    } else if !r.callgrind_churn.is_empty() {
        // A run from before the count over one connection: its report as it was.
        let _ = writeln!(md, "\nEvery 64 B request on a connection of its own (`bench-load --churn`: connect, send, read the echo, close), 16 connections at a time: what accepting, setting up and closing a connection cost, as short-lived clients make a server pay. Instructions per connection, the difference between two runs as above.\n\n| server | instructions/connection | ringloop ÷ this |\n|---|---:|---:|");
        let ours = r
            .callgrind_churn
            .iter()
            .find_map(|(s, v, _)| (*s == "ringloop").then_some(*v))
            .flatten();
        for (s, v, _) in &r.callgrind_churn {
            let _ = writeln!(
                md,
                "| {s} | {} | {} |",
                count_cell(*v),
                ratio_cell(ours, *v, s)
            );
        }
    }
    if !micro.trim().is_empty() {
        let _ = writeln!(md, "\n## Microbenchmarks\n\n{}", micro.trim());
    }
    let _ = writeln!(
        md,
        "\n{} in [{name}.raw.tsv]({name}.raw.tsv). Re-run with `bench/run` (full) or `bench/run --quick`; `bench/run --render FILE.raw.tsv` redraws both from the samples.",
        if timed {
            format!("Chart: [{name}.svg]({name}.svg); every sample")
        } else {
            "Every figure".to_owned()
        }
    );
    md
}

/// The chart of `r`: req/s and CPU per request per server, grouped by point.
pub(crate) fn svg(r: &Results) -> String {
    let (points, servers, med) = (&r.points[..], &r.servers[..], &r.medians());
    // A server keeps its colour in every chart, narrowed runs included.
    let color = |srv: &str| match srv {
        "ringloop" => "#d9480f",
        "ringloop-batch" => "#f59f00",
        "ringloop-spin" => "#74b816",
        "ringloop-basic" => "#a61e4d",
        "ringloop-awaited" => "#e599f7",
        "ringloop-64k" => "#862e9c",
        "ringloop-awaited-64k" => "#9c36b5",
        "ringloop-256k" => "#5f3dc4",
        "ringloop-awaited-256k" => "#7048e8",
        "ringloop-compat" => "#0ca678",
        "tokio" => "#1c7ed6",
        "monoio" => "#2b8a3e",
        _ => "#868e96",
    };
    let (w, panel_h, top) = (980.0, 260.0, 64.0);
    let group_w = (w - 120.0) / points.len() as f64;
    let bar_w = group_w * 0.8 / servers.len() as f64;
    // Characters of an 11 px sans-serif label that fit a group, about 6.5 px each.
    let label_chars = (group_w / 6.5) as usize;
    let mut s = String::new();
    let h = top + 2.0 * (panel_h + 70.0) + 30.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="#fff"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="20" y="24" font-size="15" font-weight="bold">Echo servers, one core each: requests/s (higher is better), server CPU µs per request (lower is better)</text><text x="{}" y="62" text-anchor="end" fill="#555">bars scaled within each point; {}</text>"##,
        w - 20.0,
        r.info.date
    );
    // The legend on a line of its own, spread to fit however many servers there are.
    let step = ((w - 40.0) / servers.len().max(1) as f64).min(130.0);
    for (i, srv) in servers.iter().enumerate() {
        let x = 20.0 + i as f64 * step;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="44">{srv}</text>"#,
            color(srv),
            x + 16.0
        );
    }
    type Metric<'a> = (&'a str, &'a dyn Fn(&Sample) -> f64);
    let metrics: [Metric; 2] = [
        ("requests/s", &|m: &Sample| m.rps),
        ("server CPU µs per request (dark: user space)", &Sample::cpu),
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
                // Headroom above the tallest bar for its label, upright or turned.
                let bh = (panel_h - 44.0) * v / max;
                let x = gx + si as f64 * bar_w;
                let label = match (mi, *v) {
                    (0, v) if v < 10_000.0 => format!("{:.1}k", v / 1000.0),
                    (0, v) => format!("{:.0}k", v / 1000.0),
                    (_, v) if v < 10.0 => format!("{v:.2}"),
                    (_, v) => format!("{v:.1}"),
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"/>"#,
                    base - bh,
                    bar_w - 2.0,
                    color(servers[si])
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
                let (lx, ly) = (x + bar_w / 2.0 - 1.0, base - bh - 3.0);
                if bar_w < 28.0 {
                    // Too narrow for the label across (seven servers at seven points): turned
                    // to run up from the bar's top.
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{ly:.1}" font-size="9" transform="rotate(-90 {:.1} {ly:.1})">{label}</text>"#,
                        lx + 3.0,
                        lx + 3.0
                    );
                } else {
                    let _ = writeln!(
                        s,
                        r#"<text x="{lx:.1}" y="{ly:.1}" font-size="9" text-anchor="middle">{label}</text>"#
                    );
                }
            }
            // The qualifier ("16 deep", "open loop at 50000 req/s") on lines of its own,
            // wrapped to the group's width: written across, eight groups' labels ran into
            // each other.
            let label = p.label();
            let (first, second) = label.split_once(", ").unwrap_or((&label, ""));
            let x = gx + group_w * 0.4;
            let lines = std::iter::once(first.to_string()).chain(wrap(second, label_chars));
            for (li, line) in lines.enumerate() {
                let _ = writeln!(
                    s,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{line}</text>"#,
                    base + 16.0 + 13.0 * li as f64,
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// `text` in lines of at most `width` characters, broken between words (a word longer than
/// `width` gets a line of its own); no line for empty text.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// The servers' notes and the tables of a run's timed rounds: ringloop against each peer,
/// against its own variants, then every figure.
fn timed_tables(md: &mut String, r: &Results, known: &[String]) {
    let info = &r.info;
    let (rounds, syscall_runs) = (info.rounds, info.syscall_runs);
    let (points, servers) = (&r.points[..], &r.servers[..]);
    let med = &r.medians();
    let _ = writeln!(md, "Servers: {}. In the table of every figure (the last), ratios are of the medians. CPU is the server's user+system CPU-seconds per 1M requests (from /proc); syscalls per request are counted by `perf stat -e raw_syscalls:sys_enter` on the server's PID, in a separate run per (server, point) since the tracepoint slows every call (the median of {} such runs of {} s).\n", known.join(", "), syscall_runs, info.syscall_secs);
    // Two tables, each narrow enough to read: what users would pick instead, then ringloop's
    // own opt-ins and ablations (`ringloop-*`).
    let (variants, peers): (Vec<&str>, Vec<&str>) = servers
        .iter()
        .copied()
        .filter(|s| *s != "ringloop")
        .partition(|s| s.starts_with("ringloop-"));
    if servers.contains(&"ringloop") && !(peers.is_empty() && variants.is_empty()) {
        let how = format!("ringloop ÷ the other server, taken round by round (the two ran back to back, in the same round) and given as the median over the rounds{}. Above 1 is better for req/s; below 1 is better for CPU per request.", if rounds > 1 { ", with the lowest and highest round in brackets: a range that straddles 1.00 is no result either way" } else { "" });
        if !peers.is_empty() {
            let _ = writeln!(md, "## ringloop against each peer\n\n{how}\n");
            ratio_table(md, r, &peers);
        }
        if !variants.is_empty() {
            let _ = writeln!(md, "## ringloop against its own variants\n\nThe default loop against the same loop with one thing changed (see Servers above), taken as above.\n");
            ratio_table(md, r, &variants);
        }
        let _ = writeln!(md, "## Every figure\n");
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
                    ours.cpu() / m.cpu()
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
                m.cpu(),
                m.user,
                m.sys,
                m.syscalls.map_or("n/a".into(), |v| format!("{v:.3}")),
                m.peak_rss_kib as f64 / 1024.0
            );
        }
    }
}

/// One row per point: ringloop's req/s and CPU per request over each of `others`', paired
/// round by round.
fn ratio_table(md: &mut String, r: &Results, others: &[&str]) {
    let rps = |m: &Sample| m.rps;
    let mut head = "| point |".to_owned();
    let mut rule = "|---|".to_owned();
    for o in others {
        let _ = write!(head, " req/s ÷ {o} | CPU ÷ {o} |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (pi, p) in r.points.iter().enumerate() {
        let mut row = format!("| {} |", p.label());
        for o in others {
            let _ = write!(
                row,
                " {} | {} |",
                paired(&r.samples, pi, o, &rps),
                paired(&r.samples, pi, o, &Sample::cpu)
            );
        }
        let _ = writeln!(md, "{row}");
    }
    md.push('\n');
}

/// The heads of a callgrind table's two count columns: per request over 16 connections and
/// over one.
const REQUEST_COLUMNS: [&str; 2] = [
    "instructions/request, 16 conns",
    "instructions/request, 1 conn",
];

/// The same for a connection per request: per connection, 16 at a time and one at a time.
const CONN_COLUMNS: [&str; 2] = [
    "instructions/connection, 16 at a time",
    "instructions/connection, 1 at a time",
];

/// A callgrind table under `heads`: each server's two counts, and ringloop's over each.
fn callgrind_table(md: &mut String, rows: &[(&str, Option<f64>, Option<f64>)], heads: [&str; 2]) {
    let [many_head, one_head] = heads;
    let _ = writeln!(md, "| server | {many_head} | ringloop ÷ this | {one_head} | ringloop ÷ this |\n|---|---:|---:|---:|---:|");
    let ours = rows.iter().find(|(s, ..)| *s == "ringloop");
    let (o16, o1) = ours.map_or((None, None), |(_, a, b)| (*a, *b));
    for (s, many, one) in rows {
        let _ = writeln!(
            md,
            "| {s} | {} | {} | {} | {} |",
            count_cell(*many),
            ratio_cell(o16, *many, s),
            count_cell(*one),
            ratio_cell(o1, *one, s)
        );
    }
}

/// An instruction count, or "failed".
fn count_cell(v: Option<f64>) -> String {
    v.map_or("failed".into(), |v| format!("{v:.0}"))
}

/// ringloop's count `ours` over server `s`'s `v`; a dash on ringloop's own row or where a
/// count failed.
fn ratio_cell(ours: Option<f64>, v: Option<f64>, s: &str) -> String {
    match (ours, v) {
        (Some(o), Some(v)) if s != "ringloop" => format!("{:.2}", o / v),
        _ => "—".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn a_label_wraps_between_words_to_the_width() {
        assert_eq!(
            wrap("open loop at 50000 req/s", 16),
            ["open loop at", "50000 req/s"]
        );
        assert_eq!(wrap("a connection each", 16), ["a connection", "each"]);
        assert_eq!(wrap("16 deep", 16), ["16 deep"]);
        assert_eq!(wrap("", 16), Vec::<String>::new());
        assert_eq!(
            wrap("unbreakable-qualifier x", 5),
            ["unbreakable-qualifier", "x"]
        );
    }
}
