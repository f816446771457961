//! A cluster that cannot watch for signals says so instead of running deaf to them. In a
//! file of its own: it fills the process's table of signal waiters, which other signal
//! tests running at the same time would find full.

use std::future::Future;
use std::task::Poll;

use ringloop::{signal, Cluster, EventLoop};

#[test]
fn a_cluster_that_cannot_watch_for_signals_fails_to_run_naming_why() {
    let mut lp = EventLoop::new().unwrap();
    lp.block_on(async {
        // Every one of the process's 64 waiters taken.
        let mut waiting: Vec<_> = (0..64).map(|_| Box::pin(signal::ctrl_c())).collect();
        std::future::poll_fn(|cx| {
            for w in &mut waiting {
                assert!(w.as_mut().poll(cx).is_pending());
            }
            Poll::Ready(())
        })
        .await;
        let cluster = Cluster::builder().threads(1).build().unwrap();
        let err = cluster
            .run(|_| async {})
            .expect_err("a cluster deaf to SIGINT/SIGTERM ran");
        let msg = err.to_string();
        assert!(
            msg.contains("SIGINT/SIGTERM") && msg.contains("64"),
            "{msg}"
        );
        // Without signal handling it runs.
        let cluster = Cluster::builder()
            .threads(1)
            .handle_signals(false)
            .build()
            .unwrap();
        cluster.run(|_| async {}).unwrap();
    });
}
