//! The replicated document store (issue 5), being built: so far where each
//! document lives. Nothing of it is reachable from the command line yet.

pub mod placement;
