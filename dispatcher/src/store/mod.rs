//! The platform database: the connection and its migrations, the deploy catalog, and the
//! schedule fire claims and run history, each in MariaDB (shared by replicas) or in memory
//! for a lone dispatcher.

mod catalog;
mod connection;
mod fires;
mod memory;
mod migrations;
mod records;

pub use connection::Store;
pub use records::{text, FireKey, NewVersion, Snapshot};
