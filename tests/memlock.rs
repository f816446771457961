//! Alone in its own test binary: it lowers the process's locked-memory limit, which would
//! change what every other test in a shared binary runs under.
//!
//! For a thread without `CAP_IPC_LOCK` in the initial user namespace the kernel charges ring
//! memory and buffer-ring entries to `RLIMIT_MEMLOCK`, and gives a closed ring's share back
//! only after a grace period. This test makes that so here too (the thread drops the
//! capability, the limit is lowered) and runs loops at the limit.

use ringloop::EventLoop;
use std::io;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;

/// Drops `CAP_IPC_LOCK` from the calling thread's effective set (capabilities are per
/// thread), so the kernel charges the rings it creates to the locked-memory limit.
fn drop_ipc_lock() {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `hdr` and `data` have the kernel's version-3 layout (a header and two data
    // words) and outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    assert_eq!(r, 0, "capget: {}", io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; dropping an effective capability needs no privilege.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", io::Error::last_os_error());
}

/// Lowers the soft locked-memory limit to `bytes` (or leaves a lower one).
fn lower_memlock(bytes: u64) {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit for the duration of the call.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) }, 0);
    rl.rlim_cur = rl.rlim_cur.min(bytes);
    // SAFETY: `rl` is a valid rlimit; lowering the soft limit needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) }, 0);
}

#[test]
fn at_the_locked_memory_limit_a_closed_loop_makes_room_for_a_new_one() {
    drop_ipc_lock();
    // About two dozen loops at the default sizes (~84 KiB each on 6.18).
    lower_memlock(2 << 20);

    let mut open = Vec::new();
    let full = loop {
        match EventLoop::new() {
            Ok(lp) => open.push(lp),
            Err(e) => break e,
        }
        if open.len() == 64 {
            eprintln!("this kernel does not charge rings to RLIMIT_MEMLOCK: nothing to test");
            return;
        }
    };
    // Where the budget runs out (the ring or its buffer ring), the error says which limit
    // and how to raise it.
    assert_eq!(full.kind(), io::ErrorKind::OutOfMemory, "{full}");
    let msg = full.to_string();
    assert!(
        msg.contains("RLIMIT_MEMLOCK") && msg.contains("ulimit -l"),
        "{msg}"
    );
    if open.len() < 2 {
        eprintln!("too little of the budget is free (this user's other processes hold it): {msg}");
        return;
    }

    // Room for a ring but not for a buffer ring of 32768 entries (512 KiB): registering it
    // fails, and that error too says which limit and how to raise it.
    open.remove(0).close().unwrap();
    let big = EventLoop::builder().recv_buffers(32768, 64).build();
    let Err(e) = big else {
        panic!("a 512 KiB buffer ring fit in the space of one loop");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("receive-buffer ring") && msg.contains("RLIMIT_MEMLOCK"),
        "{msg}"
    );

    // With the budget used up, each loop created right after one is closed must wait out the
    // kernel's release of the closed one's share rather than fail.
    for i in 0..20 {
        let lp = open.remove(0);
        if i % 2 == 0 {
            lp.close().unwrap();
        } else {
            drop(lp);
        }
        match EventLoop::new() {
            Ok(lp) => open.push(lp),
            Err(e) => panic!("cycle {i}, {} loops open: {e}", open.len()),
        }
    }
    for lp in open {
        lp.close().unwrap();
    }
}
