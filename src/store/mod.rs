//! The replicated document store: documents PUT under a prefix live on
//! `--replicas` worker ranks, on disk, placed by rendezvous hashing of
//! their path. Rank 0 orders every write and keeps the catalog of what is
//! where; the workers keep the files.
//!
//! - `placement`: which ranks keep a path, and who stands in for them;
//! - `doc`: a document file's name and header (pure);
//! - `replica`: one rank's directory, and the worker side of the frames;
//! - `catalog`: rank 0's map of documents and copies, and repair plans;
//! - `ops`: rank 0's side of one operation on one replica;
//! - `state`: the catalog and the version clock, shared;
//! - `write`: the write path, whole or streamed, in two phases;
//! - `front`: the HTTP handler;
//! - `repair`: inventories of joining ranks and repair passes.

pub mod catalog;
pub mod doc;
pub mod front;
pub mod ops;
pub mod placement;
pub mod repair;
pub mod replica;
pub mod state;
mod write;

pub use front::{Store, StoreConfig};
pub use replica::Replica;
pub use state::State;
