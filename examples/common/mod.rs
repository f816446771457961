//! What the server examples share: resolving the address, checking that io_uring can be
//! used, binding the first listener before any thread starts, and one listener per core.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;

use ringloop::net::TcpListener;

/// The listeners of a server's cores: the first, bound up front, then one per core on the
/// same port (`SO_REUSEPORT`), so that the kernel spreads connections across the cores.
pub struct Listeners {
    first: Mutex<Option<TcpListener>>,
    /// The address bound (its port chosen by the kernel if the one asked for was 0).
    pub addr: SocketAddr,
}

impl Listeners {
    /// Resolves `addr`, checks that io_uring can be used and binds the first listener, so
    /// that a bad or busy address, or io_uring refused (a container's seccomp profile, say),
    /// is reported before any thread starts. The error is the one line to print.
    pub fn bind(addr: &str) -> Result<Listeners, String> {
        let wanted: SocketAddr = match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                return Err(format!(
                    "cannot use address {addr}: not a HOST:PORT that resolves"
                ))
            }
        };
        ringloop::EventLoop::new().map_err(|e| e.to_string())?;
        let first = TcpListener::bind_reuseport(wanted)
            .map_err(|e| format!("cannot listen on {wanted}: {e}"))?;
        let addr = first.local_addr().unwrap_or(wanted);
        Ok(Listeners {
            first: Mutex::new(Some(first)),
            addr,
        })
    }

    /// A listener for the calling core: the first one for whichever core asks first, a new
    /// one on the same port for the others.
    pub fn for_core(&self) -> io::Result<TcpListener> {
        let taken = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        taken
            .map_or_else(|| TcpListener::bind_reuseport(self.addr), Ok)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", self.addr)))
    }
}

/// How many cores a server runs: `asked`, or one per CPU.
pub fn threads(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
