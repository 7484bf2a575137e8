//! What crosses ranks: the frames and their codec (`wire`), streams with
//! their credit and the `Transport` seam that cluster implements over MPI
//! and proxy in-process (`transport`), and the pool of threads that runs
//! streams on a worker (`threads`). Proxy, store and status use it;
//! nothing here knows HTTP proxying or the store.

pub mod threads;
pub mod transport;
pub mod wire;
