//! `POST /echo-std`: the echo a new user writes with std alone, no SDK: read the body from
//! stdin, print a header and a blank line, then write the body back. The bench runs it beside
//! the SDK's `echo`, so that a plain function is seen to get the same speed.

use std::io::{Read, Write};

fn main() -> std::io::Result<()> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let content_type =
        std::env::var("CONTENT_TYPE").unwrap_or_else(|_| "application/octet-stream".into());
    println!("Content-Type: {content_type}");
    println!();
    std::io::stdout().write_all(&body)
}
