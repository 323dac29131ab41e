//! Native baseline for the no-op invocation: a process that writes the same CGI answer as
//! `functions/noop` (`Status: 204`, a blank line, no body) and exits.

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
