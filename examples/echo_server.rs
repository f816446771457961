//! The echo demo: one loop per core, one SO_REUSEPORT listener per loop, zero-copy echo.
//!
//! ```sh
//! cargo run --release --example echo_server -- --addr 127.0.0.1:7878 --threads 2
//! cargo run --release --example echo_client -- --addr 127.0.0.1:7878   # in another shell
//! ```
//!
//! Each connection echoes what it receives: `recv()` hands over a loop-owned buffer from the
//! pool and `write_queued` hands that same buffer back to the loop, which sends it (no copy)
//! and frees it, without waking the task for the send: the path the library recommends for
//! replies (see `ringloop::net`, "Writing"). A peer that stops reading holds at most the
//! queue's bound (64 buffers or 256 KiB) before the connection's task waits. Out of descriptors (EMFILE), accept backs off instead of spinning.
//! SIGINT/SIGTERM stop it cleanly (exit 0) even with connections open. `--spin-us US` has
//! every loop spin that long before it sleeps (`Builder::spin_before_sleep`): lower latency
//! for a busy core. `--idle-timeout-ms MS` closes a connection that sends nothing for that
//! long (each receive under `ringloop::time::timeout`, dropped when it runs out).

mod common;

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Listeners;
use ringloop::{time, Cluster, Handle, JoinSet};

struct Args {
    addr: String,
    threads: Option<usize>,
    spin: Option<Duration>,
    idle_timeout: Option<Duration>,
}

fn usage() -> ExitCode {
    eprintln!("usage: echo_server [--addr HOST:PORT] [--threads N] [--spin-us US] [--idle-timeout-ms MS]  (default 127.0.0.1:7878, one thread per core, no spin, no idle timeout)");
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, ExitCode> {
    let mut args = Args {
        addr: "127.0.0.1:7878".to_owned(),
        threads: None,
        spin: None,
        idle_timeout: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => args.addr = it.next().ok_or_else(usage)?,
            "--threads" => {
                let v = it.next().ok_or_else(usage)?;
                match v.parse::<usize>() {
                    Ok(n) if n > 0 => args.threads = Some(n),
                    _ => {
                        eprintln!("echo_server: --threads needs a positive number, got {v:?}");
                        return Err(ExitCode::from(2));
                    }
                }
            }
            "--spin-us" => {
                let v = it.next().ok_or_else(usage)?;
                match v.parse::<u64>() {
                    Ok(us) => args.spin = Some(Duration::from_micros(us)),
                    Err(_) => {
                        eprintln!("echo_server: --spin-us needs microseconds, got {v:?}");
                        return Err(ExitCode::from(2));
                    }
                }
            }
            "--idle-timeout-ms" => {
                let v = it.next().ok_or_else(usage)?;
                match v.parse::<u64>() {
                    Ok(ms) if ms > 0 => args.idle_timeout = Some(Duration::from_millis(ms)),
                    _ => {
                        eprintln!(
                            "echo_server: --idle-timeout-ms needs positive milliseconds, got {v:?}"
                        );
                        return Err(ExitCode::from(2));
                    }
                }
            }
            "-h" | "--help" => return Err(usage()),
            other => {
                eprintln!("echo_server: unknown argument {other:?}");
                return Err(usage());
            }
        }
    }
    Ok(args)
}

/// Per-core counters, summed into the totals once when the core ends.
#[derive(Default)]
struct Stats {
    connections: Cell<u64>,
    bytes: Cell<u64>,
    idle_closes: Cell<u64>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let listeners = match Listeners::bind(&args.addr) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("echo_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listeners.addr;
    let mut builder =
        Cluster::builder().event_loop(ringloop::EventLoop::builder().spin_before_sleep(args.spin));
    if let Some(n) = args.threads {
        builder = builder.threads(n);
    }
    let cluster = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("echo_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = common::threads(args.threads);
    println!("echo_server: listening on {addr} with {threads} thread(s); Ctrl-C to stop");
    let idle_timeout = args.idle_timeout;
    let totals = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let t = totals.clone();
    let result = cluster.run(move |core| {
        let listeners = listeners.clone();
        let totals = t.clone();
        async move {
            // A core that cannot listen fails the cluster: `run` returns the error (naming
            // the core) and the process exits non-zero.
            let listener = listeners.for_core()?;
            // Connections start with Nagle off (Linux copies TCP_NODELAY from the listener),
            // and are taken without their address, which the echo does not use: no system
            // call per connection beyond the ring's.
            if let Err(e) = listener.set_nodelay(true) {
                eprintln!("echo_server: core {core}: TCP_NODELAY: {e}");
            }
            let stats = Rc::new(Stats::default());
            let stopping = Handle::current().stopping();
            // The connections' tasks, drained when the core stops.
            let mut conns = JoinSet::new();
            let accept_loop = {
                let stats = stats.clone();
                let conns = &mut conns;
                async move {
                    loop {
                        match listener.accept_stream().await {
                            Ok(conn) => {
                                stats.connections.set(stats.connections.get() + 1);
                                // Finished connections leave the set as new ones come.
                                while conns.try_join_next().is_some() {}
                                let stats = stats.clone();
                                conns.spawn(async move {
                                    loop {
                                        let received = match idle_timeout {
                                            None => conn.recv().await,
                                            Some(d) => match time::timeout(d, conn.recv()).await {
                                                Ok(r) => r,
                                                Err(_) => {
                                                    stats
                                                        .idle_closes
                                                        .set(stats.idle_closes.get() + 1);
                                                    return drop(conn.flush().await);
                                                }
                                            },
                                        };
                                        let buf = match received {
                                            Ok(b) if !b.is_empty() => b,
                                            // End of stream: let the replies go out, close.
                                            Ok(_) => return drop(conn.flush().await),
                                            Err(_) => return,
                                        };
                                        let n = buf.len() as u64;
                                        if conn.write_queued(buf).await.is_err() {
                                            return;
                                        }
                                        stats.bytes.set(stats.bytes.get() + n);
                                    }
                                });
                            }
                            // EMFILE and friends: accept() itself backs off before retrying.
                            Err(e) => eprintln!("echo_server: core {core}: accept: {e}"),
                        }
                    }
                }
            };
            // Serve until the cluster stops (whichever of the two ends first; the accept loop
            // is then dropped); then end the connections and wait until each has (its
            // buffers back in the pool), and end this core.
            futures::future::select(std::pin::pin!(accept_loop), std::pin::pin!(stopping)).await;
            conns.shutdown().await;
            totals[0].fetch_add(stats.connections.get(), Ordering::Relaxed);
            totals[1].fetch_add(stats.bytes.get(), Ordering::Relaxed);
            totals[2].fetch_add(stats.idle_closes.get(), Ordering::Relaxed);
            Ok::<(), std::io::Error>(())
        }
    });
    match result {
        Ok(()) => {
            let [conns, bytes, idle] = totals
                .as_ref()
                .each_ref()
                .map(|t| t.load(Ordering::Relaxed));
            println!("echo_server: stopped; {conns} connection(s), {bytes} byte(s) echoed, {idle} closed idle");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}
