//! Constants and record layouts of WASI preview1 (`wasi_snapshot_preview1`), as far as this
//! host uses them. Offsets are in bytes from the start of the record (wasm32, little-endian).

/// `clockid`.
pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME: u32 = 2;
    pub const THREAD_CPUTIME: u32 = 3;
}

/// `filetype` (a `u8`).
pub mod filetype {
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const SOCKET_DGRAM: u8 = 5;
    pub const SOCKET_STREAM: u8 = 6;
}

/// `fdflags` (a `u16`).
pub mod fdflags {
    pub const NONBLOCK: u16 = 1 << 2;
}

/// `rights` (a `u64` bit set).
pub mod rights {
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
}

/// `eventtype` (a `u8`): the subscription tag and the event type.
pub mod eventtype {
    pub const CLOCK: u8 = 0;
    pub const FD_READ: u8 = 1;
    pub const FD_WRITE: u8 = 2;
}

/// `subclockflags` (a `u16`).
pub mod subclockflags {
    /// The timeout is an absolute time on the clock, not a duration.
    pub const ABSTIME: u16 = 1;
}

/// `eventrwflags` (a `u16`).
pub mod eventrwflags {
    pub const FD_READWRITE_HANGUP: u16 = 1;
}

/// `iovec` / `ciovec`: `{buf: u32, buf_len: u32}`.
pub mod iovec {
    pub const SIZE: u32 = 8;
    pub const BUF: u32 = 0;
    pub const LEN: u32 = 4;
}

/// `fdstat`.
pub mod fdstat {
    pub const SIZE: u32 = 24;
    /// `fs_filetype: filetype`.
    pub const FILETYPE: u32 = 0;
    /// `fs_flags: fdflags`.
    pub const FLAGS: u32 = 2;
    /// `fs_rights_base: rights`.
    pub const RIGHTS_BASE: u32 = 8;
    /// `fs_rights_inheriting: rights`.
    pub const RIGHTS_INHERITING: u32 = 16;
}

/// `subscription`: userdata, then a tagged union of `subscription_clock` and
/// `subscription_fd_readwrite`.
pub mod subscription {
    pub const SIZE: u32 = 48;
    pub const USERDATA: u32 = 0;
    /// `eventtype`.
    pub const TAG: u32 = 8;
    /// Clock subscriptions: `id: clockid`.
    pub const CLOCK_ID: u32 = 16;
    /// Clock subscriptions: `timeout: u64` in nanoseconds.
    pub const CLOCK_TIMEOUT: u32 = 24;
    /// Clock subscriptions: `flags: subclockflags`.
    pub const CLOCK_FLAGS: u32 = 40;
    /// Fd subscriptions: `file_descriptor: fd`.
    pub const FD: u32 = 16;
}

/// `event`. Its `error: errno` (a `u16` at 8) stays 0: this host never sets it, see
/// `preview1::poll`.
pub mod event {
    pub const SIZE: u32 = 32;
    pub const USERDATA: u32 = 0;
    /// `type: eventtype`.
    pub const TYPE: u32 = 10;
    /// Fd events: `nbytes: u64`.
    pub const NBYTES: u32 = 16;
    /// Fd events: `flags: eventrwflags`.
    pub const FLAGS: u32 = 24;
}
