//! Small helpers shared by several layers.

pub(crate) mod registry;
