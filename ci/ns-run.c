/*
 * ns-run: run a command the way a container runtime would, for ci/container-check.
 *
 *   ns-run deny  CMD [ARGS...]   io_uring_setup/enter/register fail with EPERM, as under
 *                                Docker 25+'s default seccomp profile
 *   ns-run allow CMD [ARGS...]   a seccomp filter is installed but allows everything, as
 *                                under a profile that permits io_uring
 *
 * Meant to run inside fresh namespaces (unshare --user --map-root-user --mount --pid
 * --fork --net): it first brings the new network namespace's loopback up, so tests that
 * use 127.0.0.1 work, then installs the filter and execs CMD.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "ns-run: add this architecture's AUDIT_ARCH_* value"
#endif

static int loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    int r = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (r == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        r = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    close(s);
    return r;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "deny") != 0 && strcmp(argv[1], "allow") != 0)) {
        fprintf(stderr, "usage: ns-run deny|allow CMD [ARGS...]\n");
        return 2;
    }
    int deny = strcmp(argv[1], "deny") == 0;
    if (loopback_up() != 0) {
        perror("ns-run: bringing loopback up");
        return 2;
    }
    struct sock_filter deny_filter[] = {
        /* Other architectures' syscall numbers differ: let them through untouched. */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 3, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_enter, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_register, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
    };
    struct sock_filter allow_filter[] = {
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog;
    if (deny) {
        prog.len = sizeof deny_filter / sizeof deny_filter[0];
        prog.filter = deny_filter;
    } else {
        prog.len = sizeof allow_filter / sizeof allow_filter[0];
        prog.filter = allow_filter;
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        perror("ns-run: installing the seccomp filter");
        return 2;
    }
    execvp(argv[2], argv + 2);
    fprintf(stderr, "ns-run: cannot run %s: %s\n", argv[2], strerror(errno));
    return 127;
}
