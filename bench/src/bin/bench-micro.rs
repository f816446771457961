//! Microbenchmarks against a peer measured in the same run: tokio current_thread for the
//! executor and timers, a bare io-uring crate loop for NOP round trips, and tokio for a
//! cross-thread wake ping-pong (twice: with timers only, when it parks on a futex, and with
//! its I/O driver, when it parks in epoll as a network service's runtime does). Prints a
//! markdown table; `--quick` shrinks the counts. A second table gives what this machine
//! charges for the kernel calls an event loop is made of (no peer: a fact of the machine).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{opcode, IoUring};
use ringloop::__private::nop;
use ringloop_bench::Args;

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn spawn_join_ringloop(n: usize) -> Duration {
    let mut lp = ringloop::EventLoop::new().unwrap();
    let t0 = Instant::now();
    lp.block_on(async {
        let mut hs = Vec::with_capacity(1024);
        for _ in 0..n / 1024 {
            hs.extend((0..1024).map(|_| ringloop::spawn(async {})));
            for h in hs.drain(..) {
                h.await.unwrap();
            }
        }
    });
    t0.elapsed()
}

fn spawn_join_tokio(n: usize) -> Duration {
    let rt = tokio_rt();
    let t0 = Instant::now();
    rt.block_on(async {
        let mut hs = Vec::with_capacity(1024);
        for _ in 0..n / 1024 {
            hs.extend((0..1024).map(|_| tokio::spawn(async {})));
            for h in hs.drain(..) {
                h.await.unwrap();
            }
        }
    });
    t0.elapsed()
}

/// `n` tasks, each sleeping until a deadline spread over 50 ms; the time until all fired.
fn timers_ringloop(n: usize) -> Duration {
    let mut lp = ringloop::EventLoop::new().unwrap();
    let t0 = Instant::now();
    lp.block_on(async move {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                ringloop::spawn(ringloop::time::sleep(Duration::from_micros(
                    (i % 50_000) as u64,
                )))
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    t0.elapsed()
}

fn timers_tokio(n: usize) -> Duration {
    let rt = tokio_rt();
    let t0 = Instant::now();
    rt.block_on(async move {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                tokio::spawn(tokio::time::sleep(Duration::from_micros(
                    (i % 50_000) as u64,
                )))
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    t0.elapsed()
}

fn nops_ringloop(n: usize, depth: usize) -> Duration {
    let mut lp = ringloop::EventLoop::builder().entries(256).build().unwrap();
    let per = n / depth;
    let t0 = Instant::now();
    lp.block_on(async move {
        let ts: Vec<_> = (0..depth)
            .map(|_| {
                ringloop::spawn(async move {
                    for _ in 0..per {
                        nop().await.unwrap();
                    }
                })
            })
            .collect();
        for t in ts {
            t.await.unwrap();
        }
    });
    t0.elapsed()
}

fn nops_bare(n: usize, depth: usize) -> Duration {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(1024)
        .build(256)
        .unwrap();
    let total = n / depth * depth;
    let (mut submitted, mut completed) = (0, 0);
    let t0 = Instant::now();
    while completed < total {
        {
            let mut sq = ring.submission();
            while submitted < total && submitted - completed < depth {
                let e = opcode::Nop::new().build().user_data(submitted as u64);
                // SAFETY: a NOP carries no pointers.
                if unsafe { sq.push(&e) }.is_err() {
                    break;
                }
                submitted += 1;
            }
        }
        ring.submit_and_wait(1).unwrap();
        completed += ring.completion().count();
    }
    t0.elapsed()
}

/// Two threads taking turns: side `i` waits until `turn % 2 == i`, bumps it and wakes the
/// other side's waker. Each round trip is two cross-thread wakes.
struct PingPong {
    turn: AtomicU64,
    wakers: [Mutex<Option<Waker>>; 2],
}

struct MyTurn<'a>(&'a PingPong, u64);

impl Future for MyTurn<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let (pp, want) = (self.0, self.1);
        if pp.turn.load(Ordering::Acquire) == want {
            return Poll::Ready(());
        }
        *pp.wakers[(want % 2) as usize].lock().unwrap() = Some(cx.waker().clone());
        if pp.turn.load(Ordering::Acquire) == want {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

async fn play(pp: Arc<PingPong>, side: u64, rounds: u64) {
    for r in 0..rounds {
        let want = r * 2 + side;
        MyTurn(&pp, want).await;
        pp.turn.store(want + 1, Ordering::Release);
        if let Some(w) = pp.wakers[((want + 1) % 2) as usize].lock().unwrap().take() {
            w.wake();
        }
    }
}

/// Who plays the ping-pong.
#[derive(Clone, Copy)]
enum Side {
    Ringloop,
    /// tokio current_thread with timers only: it parks on a futex.
    Tokio,
    /// tokio current_thread with its I/O driver, as a network service runs it: it parks in
    /// epoll_wait and is woken through an eventfd, as ringloop is through its ring.
    TokioIo,
}

fn pingpong(rounds: u64, who: Side) -> Duration {
    let pp = Arc::new(PingPong {
        turn: AtomicU64::new(0),
        wakers: [Mutex::new(None), Mutex::new(None)],
    });
    let t0 = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|side| {
            let pp = pp.clone();
            std::thread::spawn(move || {
                ringloop_bench::pin(side as usize);
                match who {
                    Side::Tokio => tokio_rt().block_on(play(pp, side, rounds)),
                    Side::TokioIo => tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(play(pp, side, rounds)),
                    Side::Ringloop => ringloop::EventLoop::new()
                        .unwrap()
                        .block_on(play(pp, side, rounds)),
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    t0.elapsed()
}

/// Wall time of `n` calls of `f`, per call, in ns: the best of `runs` tries.
fn per_call(runs: usize, n: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..n {
                f();
            }
            t0.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// A timer armed for `after` and disarmed before it fires (a `timerfd`, two
/// `timerfd_settime` calls): a bounded wait that ends early arms and cancels one the same
/// way. Arming a timer that becomes the next to expire reprograms the CPU's timer device,
/// which a hypervisor may trap; one due after the next tick is only queued.
fn timer_pair(runs: usize, n: usize, after: Duration) -> f64 {
    // SAFETY: plain system calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC);
        assert!(
            fd >= 0,
            "timerfd_create: {}",
            std::io::Error::last_os_error()
        );
        let mut on: libc::itimerspec = std::mem::zeroed();
        on.it_value.tv_sec = after.as_secs() as libc::time_t;
        on.it_value.tv_nsec = after.subsec_nanos() as libc::c_long;
        let off: libc::itimerspec = std::mem::zeroed();
        let ns = per_call(runs, n, || {
            libc::timerfd_settime(fd, 0, &on, std::ptr::null_mut());
            libc::timerfd_settime(fd, 0, &off, std::ptr::null_mut());
        });
        libc::close(fd);
        ns
    }
}

/// What this machine charges for the calls under an event loop, as a markdown table.
fn machine_table(runs: usize, n: usize) {
    println!("\n### What this machine charges\n");
    println!("Wall time per call, best of {runs} run(s) of {n}. A wait with a bound (`Builder::batch_wait`'s min-wait, a timeout) arms a short timer and mostly cancels it; where the second row costs many system calls, as in VMs that trap the timer device, bounding waits to save system calls costs more than it saves.\n");
    println!("| call | ns each |");
    println!("|---|---:|");
    // SAFETY: getppid has no preconditions.
    let syscall = per_call(runs, n, || unsafe {
        libc::getppid();
    });
    println!("| a system call (`getppid`) | {syscall:.0} |");
    let short = timer_pair(runs, n / 10, Duration::from_micros(20));
    println!("| a 20 µs timer armed and cancelled (two `timerfd_settime`) | {short:.0} |");
    let far = timer_pair(runs, n / 10, Duration::from_secs(1));
    println!("| a 1 s timer armed and cancelled (never the next to expire) | {far:.0} |");
    let ring = IoUring::new(8).expect("io_uring_setup");
    let enter = per_call(runs, n / 10, || {
        ring.submit().expect("io_uring_enter");
    });
    println!("| an `io_uring_enter` with nothing to submit or wait for | {enter:.0} |");
}

fn best_of(runs: usize, f: impl Fn() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn main() {
    let args = Args::parse("usage: bench-micro [--quick]", &["quick"]);
    let quick = args.flag("quick");
    let (n, runs) = if quick { (100_000, 1) } else { (1_000_000, 3) };
    let pp_rounds = if quick { 10_000 } else { 100_000 };
    println!("Best of {runs} run(s) each; ratio = peer time ÷ ringloop time (above 1: ringloop is faster).\n");
    println!("| benchmark | ringloop | peer | peer time | peer ÷ ringloop |");
    println!("|---|---:|---|---:|---:|");
    let row = |name: &str, per: usize, ours: Duration, peer_name: &str, peer: Duration| {
        let ns = |d: Duration| d.as_nanos() as f64 / per as f64;
        println!(
            "| {name} | {:.0} ns each | {peer_name} | {:.0} ns each | {:.2} |",
            ns(ours),
            ns(peer),
            peer.as_secs_f64() / ours.as_secs_f64()
        );
    };
    row(
        &format!("spawn + join, {n} empty tasks"),
        n,
        best_of(runs, || spawn_join_ringloop(n)),
        "tokio current_thread",
        best_of(runs, || spawn_join_tokio(n)),
    );
    row(
        &format!("{n} timers armed and fired (deadlines over 50 ms, one task each)"),
        n,
        best_of(runs, || timers_ringloop(n)),
        "tokio current_thread",
        best_of(runs, || timers_tokio(n)),
    );
    for depth in [1, 64] {
        row(
            &format!("NOP round trip, {depth} in flight"),
            n,
            best_of(runs, || nops_ringloop(n, depth)),
            "bare io-uring loop",
            best_of(runs, || nops_bare(n, depth)),
        );
    }
    let ours = best_of(runs, || pingpong(pp_rounds, Side::Ringloop));
    row(
        &format!("cross-thread wake ping-pong, {pp_rounds} round trips"),
        pp_rounds as usize,
        ours,
        "tokio current_thread (timers only: parks on a futex)",
        best_of(runs, || pingpong(pp_rounds, Side::Tokio)),
    );
    row(
        &format!("cross-thread wake ping-pong, {pp_rounds} round trips"),
        pp_rounds as usize,
        ours,
        "tokio current_thread with I/O (parks in epoll)",
        best_of(runs, || pingpong(pp_rounds, Side::TokioIo)),
    );
    machine_table(runs, n / 10);
}
