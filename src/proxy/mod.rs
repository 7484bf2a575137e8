//! Proxying: routes and their pools of upstreams, the rank-0 handler that
//! sends requests through a `Transport` (`crate::stream`), the worker that
//! runs them against upstreams, the in-process transport of a lone process,
//! the header rules of a proxy hop, and CONNECT tunnels.

pub mod backends;
pub mod exchange;
pub mod front;
pub mod health;
pub mod hop;
pub mod inline;
pub mod local;
pub mod replay;
pub mod route;
pub mod tunnel;
pub mod upstream;
pub mod worker;

pub use crate::stream::transport::Transport;
pub use front::{Proxy, ProxyConfig};
pub use local::Local;
