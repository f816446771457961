//! Figures `bench/` does not take: loopback SEND_ZC against copying sends (the basis of the
//! default-off zero-copy threshold), ringloop file reads against `std::fs`, memory per
//! pending sleep, and, with `LOOP_COSTS_ONLY=accept`, multishot against single-shot accept.
//! Task spawn, timers and NOP round trips against tokio and a bare io-uring loop are in
//! `bench-micro` (`bench/run`). Run in release, ideally pinned: `taskset -c 1 cargo run
//! --release --example loop_costs`.

use std::time::{Duration, Instant};

use ringloop::{time, yield_now, EventLoop};

/// Operations per figure; `LOOP_COSTS_N` overrides it (for a quick run under callgrind).
fn n() -> usize {
    std::env::var("LOOP_COSTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// MB/s reading a cached 256 MiB file in 1 MiB sequential reads: ringloop's `read_at`
/// against `std::fs` `read_at` on a blocking thread.
fn file_reads() -> (f64, f64) {
    use std::os::unix::fs::FileExt;
    const SIZE: usize = 256 << 20;
    const CHUNK: usize = 1 << 20;
    let path = std::env::temp_dir().join(format!("ringloop-costs-{}", std::process::id()));
    std::fs::write(&path, vec![5u8; SIZE]).unwrap();
    let _ = std::fs::read(&path).unwrap(); // warm the page cache
    let mut lp = EventLoop::new().unwrap();
    let t0 = Instant::now();
    lp.block_on(async {
        let f = ringloop::fs::File::open(&path).await.unwrap();
        let mut buf = Vec::with_capacity(CHUNK);
        for i in 0..SIZE / CHUNK {
            let (r, b) = f.read_at(buf, (i * CHUNK) as u64).await;
            assert_eq!(r.unwrap(), CHUNK);
            buf = b;
        }
    });
    let ours = SIZE as f64 / t0.elapsed().as_secs_f64() / 1e6;
    let p2 = path.clone();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&p2).unwrap();
        let mut buf = vec![0u8; CHUNK];
        for i in 0..SIZE / CHUNK {
            assert_eq!(f.read_at(&mut buf, (i * CHUNK) as u64).unwrap(), CHUNK);
        }
    })
    .join()
    .unwrap();
    let std_mbs = SIZE as f64 / t0.elapsed().as_secs_f64() / 1e6;
    let _ = std::fs::remove_file(&path);
    (ours, std_mbs)
}

/// MB/s of a 256 MiB loopback TCP transfer in writes of `chunk` bytes, with or without
/// SEND_ZC (sender and receiver on one loop).
fn bulk_send(chunk: usize, zero_copy: bool) -> f64 {
    const TOTAL: usize = 256 << 20;
    let mut lp = EventLoop::builder()
        .send_zerocopy_threshold(zero_copy.then_some(0))
        .build()
        .unwrap();
    lp.block_on(async move {
        let l = ringloop::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = ringloop::spawn(async move {
            let (c, _) = l.accept().await.unwrap();
            let mut n = 0;
            loop {
                let b = c.recv().await.unwrap();
                if b.is_empty() {
                    return n;
                }
                n += b.len();
            }
        });
        let s = ringloop::net::TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        let mut buf = vec![3u8; chunk];
        for _ in 0..TOTAL / chunk {
            let (r, b) = s.write_all(buf).await;
            r.unwrap();
            buf = b;
        }
        s.shutdown(std::net::Shutdown::Write).await.unwrap();
        assert_eq!(reader.await.unwrap(), TOTAL / chunk * chunk);
        TOTAL as f64 / t0.elapsed().as_secs_f64() / 1e6
    })
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Connection churn: a client thread connects and hangs up `n` times; the loop accepts each
/// and drops it. Returns (connections/s, server CPU µs per connection).
fn accept_churn(multishot: bool) -> (f64, f64) {
    const N: usize = 10_000;
    let mut lp = EventLoop::builder()
        .multishot_accept(multishot)
        .build()
        .unwrap();
    lp.block_on(async move {
        let l = ringloop::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            for _ in 0..N {
                drop(std::net::TcpStream::connect(addr).unwrap());
            }
        });
        let (t0, c0) = (Instant::now(), thread_cpu());
        for _ in 0..N {
            drop(l.accept().await.unwrap());
        }
        let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
        client.join().unwrap();
        (per_sec(N, wall), cpu.as_secs_f64() * 1e6 / N as f64)
    })
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn million_sleeps() -> (u64, u64) {
    let before = vm_hwm_kib();
    let mut lp = EventLoop::new().unwrap();
    let n = n();
    for i in 0..n {
        lp.spawn(time::sleep(Duration::from_secs(600 + (i % 600) as u64)));
    }
    lp.block_on(async {
        for _ in 0..n / 128 + 10 {
            yield_now().await;
        }
    });
    assert_eq!(lp.stats().timers, n);
    let peak = vm_hwm_kib();
    let t0 = Instant::now();
    lp.close().unwrap();
    let close_ms = t0.elapsed().as_millis() as u64;
    (peak.saturating_sub(before), close_ms)
}

fn main() {
    if std::env::var("LOOP_COSTS_ONLY").as_deref() == Ok("accept") {
        for _ in 0..5 {
            let (m_rate, m_cpu) = accept_churn(true);
            let (s_rate, s_cpu) = accept_churn(false);
            println!(
                "accept churn: multishot {m_rate:.0}/s {m_cpu:.2} µs CPU/conn, single-shot {s_rate:.0}/s {s_cpu:.2} µs CPU/conn, CPU ratio {:.2}",
                m_cpu / s_cpu
            );
        }
        return;
    }
    let rounds = 3;
    println!(
        "kernel {}",
        EventLoop::new().unwrap().features().kernel_release()
    );
    for round in 1..=rounds {
        println!("-- round {round}");
        for chunk in [16 << 10, 64 << 10, 256 << 10, 1 << 20] {
            let copy = bulk_send(chunk, false);
            let zc = bulk_send(chunk, true);
            println!(
                "loopback send {:>4} KiB writes: copy {copy:>6.0} MB/s, SEND_ZC {zc:>6.0} MB/s, ratio {:.2}",
                chunk >> 10,
                zc / copy
            );
        }
        let (ours, std_mbs) = file_reads();
        println!(
            "1 MiB sequential reads, cached file: ringloop {ours:.0} MB/s, std::fs on a thread {std_mbs:.0} MB/s, ratio {:.2}",
            ours / std_mbs
        );
    }
    let (kib, close_ms) = million_sleeps();
    println!(
        "1M pending sleeps (one task each): peak RSS +{} MiB ({} B per sleep incl. its task); close {close_ms} ms",
        kib / 1024,
        kib * 1024 / n() as u64
    );
}
