//! Proxying: the header rules of a proxy hop, the frames that carry a
//! request between ranks, and the pooled upstream client. (Routes and the
//! `Transport` seam follow with the rest of issue 3.)

pub mod hop;
pub mod upstream;
pub mod wire;
