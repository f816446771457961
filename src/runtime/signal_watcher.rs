//! The Cluster's signal thread: a small loop of its own that turns SIGINT/SIGTERM into a
//! cluster stop, and a second one into the end of the grace period.

use std::io;
use std::thread;

use super::cluster::ClusterHandle;
use super::{EventLoop, Handle};
use crate::signal;
use crate::util::race::race;

/// A small loop on its own thread that turns SIGINT/SIGTERM into a cluster stop, and a second
/// one into the end of the grace period, for as long as the cluster runs (a task on a core
/// would die with that core's loop).
pub(super) struct SignalWatcher {
    handle: Handle,
    thread: thread::JoinHandle<io::Result<()>>,
}

impl SignalWatcher {
    /// Fails, rather than leave the cluster deaf to signals, if the watch cannot be set up
    /// (no room among the process's signal waiters, no descriptor, no loop for the thread).
    pub(super) fn start(cluster: ClusterHandle) -> io::Result<SignalWatcher> {
        // Set up now: a signal sent from here on is seen.
        let watch = signal::Watch::new().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot watch for SIGINT/SIGTERM: {e}; \
                     ClusterBuilder::handle_signals(false) runs without"
                ),
            )
        })?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = thread::Builder::new()
            .name("ringloop-signals".to_owned())
            .spawn(move || {
                let mut lp = match EventLoop::builder().entries(8).build() {
                    Ok(lp) => lp,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let h = lp.handle();
                let _ = tx.send(Ok(h.clone()));
                let mut watch = watch;
                lp.block_on(async move {
                    // The first signal stops the cluster; a second ends its grace period.
                    let mut seen = 0;
                    while seen < 2 {
                        let stopping = h.stopping();
                        match race(async { Some(watch.signalled().await) }, async {
                            stopping.await;
                            None
                        })
                        .await
                        {
                            Some(Ok(n)) => {
                                seen += n;
                                if seen >= 2 {
                                    cluster.cut_short();
                                } else {
                                    cluster.stop();
                                }
                            }
                            Some(Err(e)) => {
                                return Err(io::Error::new(
                                    e.kind(),
                                    format!(
                                        "the signal watcher failed, and SIGINT/SIGTERM \
                                         stopped nothing from then on: {e}"
                                    ),
                                ))
                            }
                            // The cluster has ended: nothing left to stop.
                            None => return Ok(()),
                        }
                    }
                    Ok(())
                })
            })?;
        let handle = rx
            .recv()
            .map_err(|_| io::Error::other("the signal thread ended before it started"))??;
        Ok(SignalWatcher { handle, thread })
    }

    /// Ends the watch; its error, if it failed while the cluster ran.
    pub(super) fn finish(self) -> io::Result<()> {
        self.handle.stop();
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the signal thread panicked")))
    }
}
