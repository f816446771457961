//! `Builder::iowait(false)`: an idle loop's waits are not accounted as iowait.
//!
//! The kernel accounts iowait per CPU, as idle time of a CPU whose sleeping tasks wait "for
//! I/O". The test pins itself to one CPU and reads that CPU's iowait ticks from /proc/stat
//! around two idle waits (a timer's, which waits with a timeout, and a receive's, which waits
//! without one). Another task sleeping in iowait that last ran on that CPU adds to its
//! count (a process stuck in a blocking read does), so the same idle time with no loop at all
//! is measured first as the baseline, and each loop's figure is taken above it. The default
//! loop is the control: if even it shows no iowait above the baseline, the machine gives no
//! signal and the test says so instead of passing on nothing.

use std::io::Write;
use std::time::Duration;

use ringloop::net::{TcpListener, TcpStream};
use ringloop::{time, EventLoop};

/// The CPU this thread runs on, after pinning it there.
fn pin_here() -> usize {
    // SAFETY: plain libc calls on this thread's own affinity; the set is a local value.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu failed");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
        cpu as usize
    }
}

/// The iowait ticks (USER_HZ) of `cpu` so far.
fn iowait_ticks(cpu: usize) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let prefix = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&prefix)).unwrap();
    // cpuN user nice system idle iowait ...
    line.split_whitespace().nth(5).unwrap().parse().unwrap()
}

/// Iowait ticks of this CPU while this thread sleeps as long as `idle_iowait` idles.
fn baseline_iowait(cpu: usize) -> u64 {
    let before = iowait_ticks(cpu);
    std::thread::sleep(Duration::from_millis(600));
    iowait_ticks(cpu) - before
}

/// Iowait ticks of this CPU while `lp` sits idle in a timer wait and in a receive wait.
fn idle_iowait(mut lp: EventLoop, cpu: usize) -> u64 {
    let before = iowait_ticks(cpu);
    lp.block_on(async {
        time::sleep(Duration::from_millis(300)).await;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            c.write_all(b"late").unwrap();
            c
        });
        let (s, _): (TcpStream, _) = l.accept().await.unwrap();
        let got = s.recv().await.unwrap();
        assert_eq!(&got[..], b"late");
        drop(writer.join().unwrap());
    });
    iowait_ticks(cpu) - before
}

#[test]
fn waits_skip_iowait_when_asked() {
    let probe = EventLoop::builder().iowait(false).build().unwrap();
    if probe.features().iowait() {
        eprintln!("this kernel cannot leave waits out of iowait (needs 6.15+): nothing to test");
        return;
    }
    drop(probe);
    let cpu = pin_here();
    let base = baseline_iowait(cpu);
    let control = idle_iowait(EventLoop::new().unwrap(), cpu).saturating_sub(base);
    assert!(EventLoop::new().unwrap().features().iowait());
    if control < 10 || base > control {
        eprintln!(
            "the default loop showed {control} iowait ticks in 0.6 s idle above a baseline of \
             {base}: no signal here"
        );
        return;
    }
    let off =
        idle_iowait(EventLoop::builder().iowait(false).build().unwrap(), cpu).saturating_sub(base);
    assert!(
        off <= 2 + control / 4,
        "{off} iowait ticks above the baseline ({base}) with iowait(false) (the default loop: \
         {control})"
    );
}
