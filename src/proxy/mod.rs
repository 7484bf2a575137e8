//! Proxying: the header rules of a proxy hop. (Routes, the upstream
//! client and the `Transport` seam follow with the rest of issue 3.)

pub mod hop;
