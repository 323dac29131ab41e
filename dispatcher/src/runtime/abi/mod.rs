//! The guest ABI, below every host call: the errno table, the constants and record layouts of
//! preview1 and of WasmEdge's socket extension, and the checked accessor of guest memory.
//!
//! Nothing here knows about descriptors, instances or wasmtime; the layers above (`fd`,
//! `host`, `preview1`, `sockets`) all go through it.

pub mod errno;
pub mod memory;
pub mod socket_types;
pub mod wasi_types;

pub use errno::{result_code, Errno};
pub use memory::{GuestMemory, GuestPtr, Iovec};

/// The import module every WASI preview1 (and WasmEdge socket) function lives in.
pub const MODULE: &str = "wasi_snapshot_preview1";
