//! Proxying: routes and their pools of upstreams, the rank-0 handler that sends requests through a
//! `Transport`, the worker that runs them against upstreams, the header
//! rules of a proxy hop, the frames between ranks, and CONNECT tunnels.

pub mod backends;
pub mod front;
pub mod health;
pub mod hop;
pub mod replay;
pub mod route;
pub mod threads;
pub mod transport;
pub mod tunnel;
pub mod upstream;
pub mod wire;
pub mod worker;

pub use front::{Proxy, ProxyConfig};
pub use transport::{Local, Transport};
