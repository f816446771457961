//! `ListenOptions`: the listen backlog, `SO_REUSEPORT` and `TCP_NODELAY`, for both kinds of
//! listener.

use std::io;
use std::net::ToSocketAddrs;
use std::path::Path;

use super::{TcpListener, UnixListener};

/// How a listener is set up: its backlog, whether it shares its port, and whether the
/// connections it accepts start with Nagle's algorithm off. `TcpListener::bind` and
/// `UnixListener::bind` use the defaults.
///
/// ```
/// use ringloop::net::ListenOptions;
///
/// let a = ListenOptions::new().backlog(4096).reuseport(true).bind_tcp("127.0.0.1:0")?;
/// let port = a.local_addr()?.port();
/// // A second listener on the same port: the kernel spreads connections across both.
/// let b = ListenOptions::new().reuseport(true).bind_tcp(("127.0.0.1", port))?;
/// # drop(b);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    pub(crate) backlog: u32,
    pub(crate) reuseport: bool,
    pub(crate) nodelay: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 1024,
            reuseport: false,
            nodelay: false,
        }
    }
}

impl ListenOptions {
    /// Backlog 1024, no `SO_REUSEPORT`, Nagle's algorithm left on.
    pub fn new() -> ListenOptions {
        ListenOptions::default()
    }

    /// The listen backlog: connections the kernel completes and holds until they are
    /// accepted (default 1024). The kernel clamps it to `net.core.somaxconn`.
    pub fn backlog(mut self, n: u32) -> ListenOptions {
        self.backlog = n;
        self
    }

    /// Sets `SO_REUSEPORT` (TCP only), so that several listeners (one per loop, one loop per
    /// core) share the port and the kernel spreads connections across them.
    pub fn reuseport(mut self, on: bool) -> ListenOptions {
        self.reuseport = on;
        self
    }

    /// Sets `TCP_NODELAY` on the listener (TCP only), which Linux copies to every connection
    /// it accepts: they start with Nagle's algorithm off, without a `setsockopt(2)` each
    /// (see [`TcpListener::set_nodelay`]).
    pub fn nodelay(mut self, on: bool) -> ListenOptions {
        self.nodelay = on;
        self
    }

    /// Binds a TCP listener (with `SO_REUSEADDR`) to the first address of `addr` that works.
    ///
    /// # Errors
    ///
    /// The bind or listen error (`AddrInUse`, `AddrNotAvailable`, ...), naming the address.
    pub fn bind_tcp(&self, addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        super::tcp::bind_with(addr, self)
    }

    /// Binds a Unix-domain listener to `path`, which must not exist.
    ///
    /// # Errors
    ///
    /// The bind or listen error, naming the path; `InvalidInput` if `reuseport` or
    /// `nodelay` was asked for, which Unix sockets do not have.
    pub fn bind_unix(&self, path: impl AsRef<Path>) -> io::Result<UnixListener> {
        if self.reuseport {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SO_REUSEPORT is for TCP listeners; Unix-domain listeners cannot share a path",
            ));
        }
        if self.nodelay {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TCP_NODELAY is for TCP listeners; Unix-domain sockets have no Nagle's algorithm",
            ));
        }
        super::unix::bind_with(path.as_ref(), self)
    }

    /// The backlog as `listen(2)` takes it.
    pub(crate) fn backlog_arg(&self) -> i32 {
        i32::try_from(self.backlog).unwrap_or(i32::MAX)
    }
}
