//! The atomics of the cross-thread protocols that loom checks: std's in every build, loom's
//! under `--cfg loom` (`.ci/run` builds the crate so for the models alone; see
//! `executor::handshake`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool};
