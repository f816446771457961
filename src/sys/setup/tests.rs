//! Unit tests of ring set-up and its errors.

use super::*;

#[test]
fn eperm_message_names_seccomp_when_not_disabled_by_sysctl() {
    let msg = explain(io::Error::from_raw_os_error(libc::EPERM), 8).to_string();
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if disabled == 0 {
        assert!(msg.contains("seccomp"), "{msg}");
    } else {
        assert!(msg.contains("io_uring_disabled"), "{msg}");
    }
}

#[test]
fn enomem_message_names_the_memlock_limit() {
    let e = explain(io::Error::from_raw_os_error(libc::ENOMEM), 4096);
    assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
    assert!(e.to_string().contains("ulimit -l"), "{e}");
}

#[test]
fn enomem_is_retried_until_the_call_succeeds() {
    let mut calls = 0;
    let r = retry_enomem(Duration::from_secs(1), || {
        calls += 1;
        if calls < 4 {
            Err(io::Error::from_raw_os_error(libc::ENOMEM))
        } else {
            Ok(calls)
        }
    });
    assert_eq!(r.unwrap(), 4);
}

/// `retry_enomem` over a call that always fails with `errno`: the error it returns, and
/// how many calls it made.
fn always_failing(window: Duration, errno: i32) -> (Option<i32>, usize) {
    let mut calls = 0;
    let r: io::Result<()> = retry_enomem(window, || {
        calls += 1;
        Err(io::Error::from_raw_os_error(errno))
    });
    (r.unwrap_err().raw_os_error(), calls)
}

#[test]
fn other_errors_are_not_retried() {
    let (err, calls) = always_failing(Duration::from_secs(1), libc::EINVAL);
    assert_eq!(err, Some(libc::EINVAL));
    assert_eq!(calls, 1);
}

#[test]
fn enomem_stands_once_the_window_is_spent() {
    let (err, calls) = always_failing(Duration::from_millis(20), libc::ENOMEM);
    assert_eq!(err, Some(libc::ENOMEM));
    // Sleeps of 1, 2, 4, 8 and 16 ms: the fifth brings the total past 20 ms.
    assert_eq!(calls, 6);
}

/// A ring of 8 SQ and 32 CQ entries in `mode` (`None`: the best the kernel takes).
fn small_ring(mode: Option<SetupMode>) -> (IoUring, Features) {
    let cfg = RingConfig {
        entries: 8,
        cq_entries: 32,
        mode,
        taskrun_flag: false,
    };
    setup(&cfg).unwrap()
}

#[test]
fn forced_basic_mode_is_honoured() {
    let (_ring, f) = small_ring(Some(SetupMode::Basic));
    assert_eq!(f.setup_mode(), SetupMode::Basic);
    assert!(f.supports_opcode(opcode::Nop::CODE));
}

#[test]
fn debug_shows_the_probe_as_opcode_ranges() {
    let (_ring, mut f) = small_ring(None);
    f.probe = vec![false; 256];
    for code in [0, 1, 2, 5, 7, 8] {
        f.probe[code] = true;
    }
    let shown = format!("{f:?}");
    assert!(shown.contains(r#"opcodes: "0-2, 5, 7-8""#), "{shown}");
    assert!(!shown.contains("false, false"), "{shown}");
}

/// Submits `n` NOPs in one enter and reaps them: the kernel found the SQEs where they
/// were written.
fn nops_round_trip(ring: &mut IoUring, n: u64) {
    for i in 0..n {
        let sqe = opcode::Nop::new().build().user_data(i);
        // SAFETY: a NOP names no memory.
        unsafe { ring.submission().push(&sqe).unwrap() };
    }
    ring.submit_and_wait(n as usize).unwrap();
    let mut seen: Vec<u64> = ring.completion().map(|c| c.user_data()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
}

#[test]
fn the_sq_array_is_dropped_where_the_kernel_allows_it_and_submission_works_either_way() {
    let kernel = super::super::kernel_release();
    let new = super::super::parse_kernel_version(&kernel).is_some_and(|v| v >= (6, 6));
    for mode in [None, Some(SetupMode::CoopTaskrun), Some(SetupMode::Basic)] {
        let (mut ring, f) = small_ring(mode);
        if new {
            assert!(f.no_sq_array, "{kernel}, {mode:?}: set up with an SQ array");
        }
        // Past the ring's end twice, so the SQ's head and tail wrap.
        for _ in 0..3 {
            nops_round_trip(&mut ring, 7);
        }
    }
}
