//! `IORING_OP_NOP`: completes at once; measures the loop's own overhead.

use io_uring::{opcode, squeue};

use crate::driver::OpCode;

/// A no-op.
pub(crate) struct Nop;

// SAFETY: a NOP SQE carries no pointers.
unsafe impl OpCode for Nop {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::Nop::new().build()
    }
}
