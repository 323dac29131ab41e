//! The function's answer under the CGI/1.1 contract, as WAGI applies it: CGI headers
//! (`Status`, `Content-Type`, `Location`, any others), a blank line, then the body.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Longest header section a function may write before its body.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A function's answer, parsed.
#[derive(Debug)]
pub struct CgiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Parses CGI output: header lines (`\n` or `\r\n`), a blank line, then the body.
pub fn parse_output(output: Vec<u8>) -> Result<CgiResponse, String> {
    let mut output = Bytes::from(output);
    if output.is_empty() {
        return Err(
            "the function wrote nothing: expected CGI headers, a blank line and a body".into(),
        );
    }
    let mut status = None;
    let mut headers = HeaderMap::new();
    let mut pos = 0;
    loop {
        let Some(nl) = output[pos..].iter().position(|&b| b == b'\n') else {
            return Err("the output has no blank line after its headers".into());
        };
        let mut line = &output[pos..pos + nl];
        pos += nl + 1;
        if pos > MAX_HEADER_BYTES {
            return Err(format!(
                "the header section is longer than {MAX_HEADER_BYTES} bytes"
            ));
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.is_empty() {
            break;
        }
        let text =
            std::str::from_utf8(line).map_err(|_| "a header line is not UTF-8".to_string())?;
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("header line `{}` has no `:`", truncate(text)))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| (100..=599).contains(&c.as_u16()))
                .ok_or_else(|| {
                    format!("`Status: {}` is not an HTTP status code", truncate(value))
                })?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", truncate(name)))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` is not valid"))?;
        headers.append(name, value);
    }
    let status = status.unwrap_or(if headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    let body = output.split_off(pos);
    Ok(CgiResponse {
        status,
        headers,
        body,
    })
}

/// The `Status` a function wrote in its header section, if it wrote one.
pub fn explicit_status(output: &[u8]) -> Option<u16> {
    for line in output.split(|&b| b == b'\n').take(MAX_HEADER_LINES) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = std::str::from_utf8(line).ok()?;
        let (name, value) = text.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("status") {
            return value.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// How many header lines [`explicit_status`] looks at.
const MAX_HEADER_LINES: usize = 200;

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lf_and_crlf() {
        let r = parse_output(
            b"Status: 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nbody\n".to_vec(),
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(r.headers["x-a"], "1");
        assert_eq!(&r.body[..], b"body\n");
        let r = parse_output(b"Content-Type: a/b\n\n".to_vec()).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
    }

    #[test]
    fn finds_an_explicit_status() {
        assert_eq!(
            explicit_status(b"Content-Type: a\nStatus: 500 Oops\n\nbody"),
            Some(500)
        );
        assert_eq!(explicit_status(b"Location: /x\n\n"), None);
        assert_eq!(explicit_status(b""), None);
        assert_eq!(explicit_status(b"plain text output\nStatus: 500\n"), None);
    }

    #[test]
    fn location_without_status_redirects() {
        let r = parse_output(b"Location: /x\n\n".to_vec()).unwrap();
        assert_eq!(r.status, 302);
    }

    #[test]
    fn rejects_bad_output() {
        assert!(parse_output(Vec::new()).is_err());
        assert!(parse_output(b"hello world".to_vec()).is_err());
        assert!(parse_output(b"no colon here\n\nbody".to_vec())
            .unwrap_err()
            .contains("no `:`"));
        assert!(parse_output(b"Status: abc\n\n".to_vec()).is_err());
        assert!(parse_output(b"Status: 99\n\n".to_vec()).is_err());
        let mut big = b"X: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES));
        big.extend_from_slice(b"\n\n");
        assert!(parse_output(big).unwrap_err().contains("longer than"));
    }
}
