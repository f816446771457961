//! User-space instructions per request and per connection under callgrind: the one figure
//! free of the machine's noise. Each is the difference between two runs of different
//! lengths, so that start-up cancels out.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::measure::{spawn_server, wait_for_exit, Cfg};

/// User-space instructions per request under callgrind, over `conns` connections: the
/// difference between a run of `n2` and one of `n1` requests, divided by `n2 - n1`, so
/// start-up cancels out.
pub(crate) fn callgrind_per_request(
    cfg: &Cfg,
    server: &str,
    conns: usize,
    n1: u64,
    n2: u64,
    extra: &[&str],
) -> Option<f64> {
    let a = callgrind_total(cfg, server, conns, n1, extra, false)?;
    let b = callgrind_total(cfg, server, conns, n2, extra, false)?;
    Some((b - a) / (n2 - n1) as f64)
}

/// User-space instructions per connection under callgrind, when every 64 B request comes on
/// a connection of its own (`bench-load --churn`), `conns` at a time: accept, receive, send,
/// close. The difference between runs of `n2` and `n1` connections, as above.
pub(crate) fn callgrind_per_conn(
    cfg: &Cfg,
    server: &str,
    conns: usize,
    n1: u64,
    n2: u64,
) -> Option<f64> {
    let a = callgrind_total(cfg, server, conns, n1, &[], true)?;
    let b = callgrind_total(cfg, server, conns, n2, &[], true)?;
    Some((b - a) / (n2 - n1) as f64)
}

/// The instructions `server` ran under callgrind while serving `n` requests over `conns`
/// connections at a time (`churn`: each request on a new connection). The server exits once
/// every connection closed.
pub(crate) fn callgrind_total(
    cfg: &Cfg,
    server: &str,
    conns: usize,
    n: u64,
    extra: &[&str],
    churn: bool,
) -> Option<f64> {
    let exit_after = if churn {
        n.to_string()
    } else {
        conns.to_string()
    };
    let conns = conns.to_string();
    let out = std::env::temp_dir().join(format!(
        "ringloop-cg-{server}-{conns}-{n}{}.out",
        if churn { "-churn" } else { "" }
    ));
    let wrapper: Vec<String> = vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    let args: Vec<&str> = ["--exit-after", exit_after.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let (srv, addr) = spawn_server(cfg, server, &wrapper, &args);
    let status = Command::new(cfg.bin.join("bench-load"))
        .args([
            "--addr",
            &addr.to_string(),
            "--conns",
            &conns,
            "--size",
            "64",
        ])
        .args(if churn { &["--churn"][..] } else { &[] })
        .args(["--requests", &n.to_string()])
        .args(["--cpu", &cfg.client_cpu.to_string()])
        .stdout(Stdio::null())
        .status()
        .ok()?;
    // The server exits by itself once the connections closed (--exit-after), so
    // valgrind writes its output; signals cannot stop it while it waits in io_uring_enter.
    let exited = wait_for_exit(srv, Duration::from_secs(120));
    if !status.success() || !exited {
        return None;
    }
    callgrind_out_total(&out)
}

/// The total instructions in the callgrind output file `out`, which is removed.
pub(crate) fn callgrind_out_total(out: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(out).ok()?;
    let _ = std::fs::remove_file(out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Each server's instructions per request over 16 connections and over one, with the
/// binaries of `cfg`.
pub(crate) fn callgrind_rows(
    cfg: &Cfg,
    servers: &[&'static str],
    n1: u64,
    n2: u64,
    extra: &[&str],
) -> Vec<(&'static str, Option<f64>, Option<f64>)> {
    servers
        .iter()
        .map(|s| {
            (
                *s,
                callgrind_per_request(cfg, s, 16, n1, n2, extra),
                callgrind_per_request(cfg, s, 1, n1, n2, extra),
            )
        })
        .collect()
}

/// Builds the servers (and the load generator) with the `release-lto` profile next to the
/// release build; the configuration that runs them, or `None` (said on stderr) if the build
/// failed.
pub(crate) fn build_lto(cfg: &Cfg) -> Option<Cfg> {
    let target = cfg.bin.parent()?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    eprintln!("bench-run: building the servers with --profile release-lto for callgrind");
    let ok = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--profile",
            "release-lto",
            "-p",
            "ringloop-bench",
        ])
        .args(["--bin", "bench-echo", "--bin", "bench-load", "--target-dir"])
        .arg(target)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("bench-run: the release-lto build failed; its callgrind table is left out");
        return None;
    }
    Some(Cfg {
        bin: target.join("release-lto"),
        ..cfg.clone()
    })
}
