//! Ending a stream's receive side to hand its socket back (`into_std`): what the loop
//! received and no call returned yet, taken out in order. A child of `recv`, whose receiver's
//! state it reads.

use std::io;

use super::{Receiver, SingleOp};
use crate::net::ops::received;

impl Receiver {
    /// Ends the stream's receives and returns the bytes the loop received for it that no
    /// `recv()` or read has returned yet, in order: for handing the socket back to its owner
    /// (`into_std`), who reads what follows from the socket itself. The armed multishot
    /// receive and the single-shot receive in flight are cancelled, and their completions up
    /// to the last are taken (a receive may win the race with its cancel).
    ///
    /// # Errors
    ///
    /// An error a receive reported (the peer reset the connection, say).
    pub(crate) async fn take_received(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        #[cfg(any(feature = "tokio-io", feature = "futures-io", feature = "hyper"))]
        if let Some(bytes) = self.bytes.get() {
            if let Some(buf) = Receiver::rest_for_recv(&bytes) {
                out.extend_from_slice(&buf);
            }
        }
        let single = self.single.get().and_then(|s| {
            s.into_ref()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .op
                .take()
        });
        let got = match single {
            None => None,
            Some(SingleOp::Owned(op)) => {
                op.cancel()?;
                let mut done = op.await;
                done.data.received(done.result)
            }
            Some(SingleOp::Select(op)) => {
                op.cancel()?;
                let done = op.await;
                received(&done.data.pool, done.result, done.flags)
            }
        };
        if let Some(r) = got {
            out.extend_from_slice(&r?);
        }
        if let Some(key) = self.armed.key() {
            self.armed.cancel()?;
            loop {
                let c = std::future::poll_fn(|cx| self.armed.poll_next(key, cx)).await;
                let got = crate::driver::with_current(|d| {
                    d.pool().and_then(|p| received(p, c.result(), c.flags))
                })
                .flatten();
                if let Some(r) = got {
                    out.extend_from_slice(&r?);
                }
                if !c.more() {
                    break;
                }
            }
        }
        Ok(out)
    }
}
