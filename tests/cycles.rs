//! Alone in its own test binary: it measures the process's RSS, which other tests would
//! disturb.

use ringloop::__private::nop;
use ringloop::EventLoop;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn three_hundred_create_close_cycles_leak_no_fd_or_memory() {
    fn rss_kib() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
    for _ in 0..10 {
        EventLoop::new().unwrap().close().unwrap();
    }
    let fds = open_fds();
    let rss = rss_kib();
    for i in 0..300 {
        let mut lp = EventLoop::new().unwrap();
        lp.block_on(async { nop().await.unwrap() });
        if i % 2 == 0 {
            lp.close().unwrap();
        } else {
            drop(lp);
        }
    }
    assert_eq!(open_fds(), fds);
    let grown = rss_kib().saturating_sub(rss);
    // A leaked ring would cost ~100 KiB of mappings each: 300 of them, ~30 MiB.
    assert!(grown < 8 * 1024, "RSS grew by {grown} KiB over 300 cycles");
}
