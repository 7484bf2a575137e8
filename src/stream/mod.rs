//! What crosses ranks: the frames and their codec (`wire`), streams with
//! the `Transport` seam that cluster implements over MPI
//! and proxy in-process (`transport`), credit for every stream's body
//! (`credit`), and the pool of threads that runs
//! streams on a worker (`threads`). Proxy, store and status use it;
//! nothing here knows HTTP proxying or the store.

pub mod credit;
pub mod dispatcher;
pub mod failure;
pub mod loopback;
pub mod membership;
pub mod threads;
pub mod transport;
pub mod wire;
