//! io_uring refused: a child process installs a seccomp filter that makes `io_uring_setup`
//! fail with a chosen errno, then tries to make a loop; the parent checks the message names
//! the cause and the remedy.

use std::process::Command;

use ringloop::EventLoop;

const CHILD_ENV: &str = "RINGLOOP_TEST_SECCOMP_ERRNO";

/// Installs a filter: `io_uring_setup` fails with `errno`; every other syscall is allowed.
fn refuse_io_uring_setup(errno: u32) {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | errno,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        r,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `prog` points at `filter`, both alive for the call; the kernel copies them.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    assert_eq!(r, 0, "PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
}

/// The child's half: runs only when re-executed by `refused_with`.
#[test]
fn seccomp_child() {
    let Ok(errno) = std::env::var(CHILD_ENV) else {
        return;
    };
    refuse_io_uring_setup(errno.parse().unwrap());
    match EventLoop::new() {
        Ok(_) => {
            println!("UNEXPECTED-OK");
            std::process::exit(3);
        }
        Err(e) => {
            println!("KIND:{:?}", e.kind());
            println!("MSG:{e}");
        }
    }
}

fn refused_with(errno: i32) -> (String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "seccomp_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, errno.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, v)| v))
            .unwrap_or_else(|| panic!("no {name} in child output: {stdout}"))
            .to_owned()
    };
    (field("KIND:"), field("MSG:"))
}

#[test]
fn eperm_from_seccomp_names_seccomp_and_the_fix() {
    let (kind, msg) = refused_with(libc::EPERM);
    assert_eq!(kind, "PermissionDenied");
    assert!(msg.contains("seccomp"), "{msg}");
    assert!(msg.contains("docs/containers.md"), "{msg}");
}

#[test]
fn enosys_names_the_kernel() {
    let (kind, msg) = refused_with(libc::ENOSYS);
    assert_eq!(kind, "Unsupported");
    assert!(msg.contains("kernel"), "{msg}");
}

#[test]
fn enomem_names_the_memlock_limit() {
    let (kind, msg) = refused_with(libc::ENOMEM);
    assert_eq!(kind, "OutOfMemory");
    assert!(msg.contains("ulimit -l"), "{msg}");
}
