//! Database sessions from a host-side pool. A guest's connection to a pooled `mysql://`
//! endpoint of its manifest reaches the host, which answers the MySQL login itself (checking
//! the guest's credentials), then relays the session byte for byte over a backend connection
//! it authenticated earlier, pinned to that session, and resets the backend
//! (`COM_RESET_CONNECTION`, then the default schema) when the guest lets go. Unmodified
//! drivers keep working, nothing crosses sessions, and the database sees at most
//! `max_backends` connections per pool and dispatcher.

mod backend;
mod login;
mod pool;
mod pools;
mod session;
mod tracker;
mod wire;

pub use pool::PoolConfig;
pub use pools::Pools;
