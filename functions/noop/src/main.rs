//! The smallest function: answers `204 No Content` with no body, using only std.
//!
//! `make bench` times a fresh instance of it per invocation, so its cost is the platform's.

use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(b"Status: 204\n\n")
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(1);
    }
}
