//! The shoal agent: the daemon on every machine of a fleet. It shares a directory (a manifest
//! per file, announced to the tracker), serves the pieces it holds to peers, and downloads
//! through the engine with peers and the origin as sources of one scheduler, announcing pieces
//! as they are verified so others fetch from it while it is still downloading.

pub mod agent;
pub mod announce;
pub mod catalog;
pub mod control;
mod durable;
mod exchange;
pub mod fetch;
pub mod id;
pub mod meter;
pub mod metrics;
pub mod objects;
pub mod ordered;
pub mod peers;
pub mod piece_size;
pub mod proxy;
pub mod queue;
pub mod registry;
pub mod rpc;
pub mod serve;
pub mod share;
#[cfg(test)]
mod testing;
pub mod tracker;
pub mod ui;

pub use agent::{run, AgentError, AgentOptions};
pub use catalog::{Catalog, Change, Entry, Provenance};
pub use shoal_serve::ServerTls;
