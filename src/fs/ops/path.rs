//! Path operations: `IORING_OP_UNLINKAT`, `IORING_OP_RENAMEAT`, `IORING_OP_MKDIRAT`.

use std::ffi::CString;

use io_uring::{opcode, squeue, types};

use crate::driver::OpCode;

pub(crate) struct UnlinkAt {
    /// Read by the kernel until the CQE.
    pub(crate) path: CString,
}

// SAFETY: the only pointer is the CString's heap buffer, owned by this op.
unsafe impl OpCode for UnlinkAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr()).build()
    }
}

pub(crate) struct RenameAt {
    /// Read by the kernel until the CQE.
    pub(crate) from: CString,
    /// Read by the kernel until the CQE.
    pub(crate) to: CString,
}

// SAFETY: the pointers are the two CStrings' heap buffers, owned by this op.
unsafe impl OpCode for RenameAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::RenameAt::new(
            types::Fd(libc::AT_FDCWD),
            self.from.as_ptr(),
            types::Fd(libc::AT_FDCWD),
            self.to.as_ptr(),
        )
        .build()
    }
}

pub(crate) struct MkDirAt {
    /// Read by the kernel until the CQE.
    pub(crate) path: CString,
}

// SAFETY: the only pointer is the CString's heap buffer, owned by this op.
unsafe impl OpCode for MkDirAt {
    fn sqe(&mut self) -> squeue::Entry {
        opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .mode(0o777)
            .build()
    }
}
