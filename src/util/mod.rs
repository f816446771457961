//! Small helpers shared by several layers.

pub(crate) mod race;
pub(crate) mod registry;
