//! The load generator's own behaviour, against small servers written here: what it counts,
//! what it checks, and that its open loop keeps a schedule rather than waiting for replies.
//! Each figure in `bench/results` rests on these.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::Duration;

/// A server on a thread per connection that answers every `size`-byte request with
/// `reply(request)` after `delay`, one request at a time, as long as the client stays.
fn server(size: usize, delay: Duration, reply: fn(&mut [u8], u64)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a test server");
    let addr = l.local_addr().expect("its address");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut req = vec![0u8; size];
                let mut n = 0u64;
                while s.read_exact(&mut req).is_ok() {
                    std::thread::sleep(delay);
                    reply(&mut req, n);
                    n += 1;
                    if s.write_all(&req).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn echo(_: &mut [u8], _: u64) {}

/// Runs bench-load against `addr` with `args`.
fn load(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bench-load"))
        .args(["--addr", &addr.to_string()])
        .args(args)
        .output()
        .expect("run bench-load")
}

/// The `result` line's fields: requests, then p50 µs.
fn result(out: &Output) -> (u64, f64) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench-load failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("no result line in {stdout:?}"));
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .parse()
            .unwrap_or_else(|_| panic!("bad {k} in {line:?}"))
    };
    (field("requests") as u64, field("p50_us"))
}

#[test]
fn a_fixed_run_counts_exactly_the_requests_asked_for() {
    let addr = server(64, Duration::ZERO, echo);
    let out = load(
        addr,
        &["--conns", "4", "--depth", "3", "--requests", "1000"],
    );
    assert_eq!(result(&out).0, 1000);
}

#[test]
fn one_wrong_byte_in_an_echo_fails_the_run() {
    // The 100th reply on each connection comes back with one byte changed.
    fn corrupt(req: &mut [u8], n: u64) {
        if n == 99 {
            req[17] ^= 1;
        }
    }
    let addr = server(64, Duration::ZERO, corrupt);
    let out = load(addr, &["--conns", "2", "--requests", "1000"]);
    assert!(!out.status.success(), "a corrupted echo passed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("differs"), "unexpected failure: {err}");
}

#[test]
fn the_open_loop_sends_at_the_rate_asked_for() {
    let addr = server(64, Duration::ZERO, echo);
    let out = load(
        addr,
        &[
            "--conns",
            "4",
            "--rate",
            "2000",
            "--warmup",
            "0.2",
            "--duration",
            "1",
        ],
    );
    // 2,000 a second for a second: a closed loop would run as fast as the server goes
    // (tens of thousands a second here).
    let (n, _) = result(&out);
    assert!((1600..=2400).contains(&n), "{n} requests at 2000/s for 1 s");
}

#[test]
fn the_open_loop_charges_a_slow_server_for_its_queue() {
    // One connection, a request due every 5 ms, a server that takes 20 ms for each: the
    // requests pile up, and each waits for all those ahead of it. A closed loop (or an open
    // one that waited for replies) would report about 20 ms.
    let addr = server(64, Duration::from_millis(20), echo);
    let out = load(
        addr,
        &[
            "--conns",
            "1",
            "--rate",
            "200",
            "--warmup",
            "0.1",
            "--duration",
            "0.6",
        ],
    );
    let (n, p50_us) = result(&out);
    assert!(n >= 10, "only {n} replies in 0.6 s");
    assert!(
        p50_us > 100_000.0,
        "median {p50_us} µs: the queue behind a 20 ms server is not counted"
    );
}

/// A 31-byte HTTP reply to the 31-byte `GET /` that `--http` sends; the 100th on each
/// connection with a 500 status when `fail_100th`.
fn http_reply(req: &mut [u8], n: u64, fail_100th: bool) {
    assert!(req.starts_with(b"GET / HTTP/1.1\r\n"), "not a GET: {req:?}");
    let reply: &[u8] = if fail_100th && n == 99 {
        b"HTTP/1.1 500 Oops\r\nabc: efg\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nabcd: efgh\r\n\r\n"
    };
    req.copy_from_slice(reply);
}

#[test]
fn http_replies_are_counted_by_their_length() {
    let addr = server(31, Duration::ZERO, |r, n| http_reply(r, n, false));
    let out = load(
        addr,
        &["--conns", "4", "--http", "31", "--requests", "1000"],
    );
    assert_eq!(result(&out).0, 1000);
}

#[test]
fn an_http_reply_that_is_not_200_fails_the_run() {
    let addr = server(31, Duration::ZERO, |r, n| http_reply(r, n, true));
    let out = load(
        addr,
        &["--conns", "2", "--http", "31", "--requests", "1000"],
    );
    assert!(!out.status.success(), "a 500 reply passed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not start with"),
        "unexpected failure: {err}"
    );
}
