//! mpiweb: an HTTP/1.1 web server and proxy on `std::net`, spread over MPI
//! ranks. See ARCHITECTURE.md in the shared docs for the module map.

pub mod cluster;
pub mod config;
pub mod error;
pub mod handler;
pub mod hash;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod server;
pub mod static_files;
pub mod status;
pub mod store;
pub mod stream;
