//! `StreamKeep`: what a multishot op armed by an I/O object keeps for the kernel until its
//! final CQE, stored in the slot's stream state.

use std::sync::Arc;

use super::bufring::BufPool;
use super::completion::{Completion, Orphan};

/// What a stream keeps for the kernel until its final CQE. Stored in the stream's state,
/// which the driver reuses, so that arming the common kind (a receive drawing on the loop's
/// buffer pool) allocates nothing: a box would cost a `malloc` and a `free` per connection,
/// and more memory per idle one than the larger state does.
#[derive(Default)]
pub(crate) enum StreamKeep {
    /// Nothing to keep.
    #[default]
    Nothing,
    /// What the op names (its descriptor, type-erased: the driver knows nothing of it), held
    /// until the final CQE, and the pool its CQEs' buffers come from: the buffer of a CQE
    /// nobody takes goes back there.
    Buffers {
        /// Held, not read.
        #[allow(dead_code)]
        hold: Arc<dyn Send + Sync>,
        pool: BufPool,
    },
    /// Anything else, which releases its CQEs' resources itself (an accept's descriptors).
    Other(Box<dyn Orphan>),
}

impl StreamKeep {
    /// As the orphan of a slot whose owner is gone. Boxes only a `Buffers` keep: a stream is
    /// orphaned when its owner drops it before the kernel ended it, which is rarer than
    /// arming one.
    pub(crate) fn into_orphan(self) -> Box<dyn Orphan> {
        match self {
            StreamKeep::Nothing => Box::new(NoKeep),
            StreamKeep::Other(o) => o,
            keep @ StreamKeep::Buffers { .. } => Box::new(keep),
        }
    }
}

impl Orphan for StreamKeep {
    fn release(&mut self, c: Completion) {
        match self {
            StreamKeep::Nothing => {}
            StreamKeep::Buffers { pool, .. } => {
                if let Some(bid) = io_uring::cqueue::buffer_select(c.flags) {
                    drop(pool.take(bid, 0));
                }
            }
            StreamKeep::Other(o) => o.release(c),
        }
    }
}

/// An orphan with nothing to release (a zero-sized box: no allocation).
struct NoKeep;

impl Orphan for NoKeep {
    fn release(&mut self, _: Completion) {}
}
