//! Proxying: the header rules of a proxy hop and the frames that carry a
//! request between ranks. (Routes, the upstream client and the
//! `Transport` seam follow with the rest of issue 3.)

pub mod hop;
pub mod wire;
