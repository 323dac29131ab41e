//! The body of a deploy (`POST /_dispatcher/functions`): a `multipart/form-data` form with
//! exactly one `manifest` part (the manifest's TOML, UTF-8) and one `wasm` part (the module).
//! Anything else is refused with a sentence naming what is wrong and what was expected.

use std::convert::Infallible;

use bytes::Bytes;
use http::HeaderValue;

/// What a deploy's body must be.
pub const EXPECTED: &str = "expected a multipart/form-data body with a `manifest` part (the \
                            manifest's TOML) and a `wasm` part (the module)";

/// Largest `manifest` part: a manifest is a few hundred bytes of TOML.
const MAX_MANIFEST: u64 = 1 << 20;

/// Longest file name a part may carry: it becomes the deploy's recorded source.
const MAX_FILE_NAME: usize = 255;

/// How much of a client's own text (a content type, a part's name) an error quotes.
const QUOTED: usize = 64;

/// A deploy's two parts.
#[derive(Debug)]
pub struct DeployForm {
    /// The manifest part's file name (`hello.toml`), or `manifest.toml`: errors name it.
    pub label: String,
    pub manifest: String,
    pub wasm: Vec<u8>,
}

/// The form's boundary, from the request's `Content-Type`.
pub fn parse_boundary(content_type: Option<&HeaderValue>) -> Result<String, String> {
    let Some(value) = content_type else {
        return Err(format!("the request has no Content-Type: {EXPECTED}"));
    };
    let Ok(text) = value.to_str() else {
        return Err(format!("the Content-Type is not ASCII text: {EXPECTED}"));
    };
    multer::parse_boundary(text).map_err(|e| match e {
        multer::Error::NoBoundary => format!(
            "the Content-Type has no boundary (`multipart/form-data; boundary=...`): {EXPECTED}"
        ),
        _ => format!("the Content-Type is `{}`: {EXPECTED}", quote(text)),
    })
}

/// The two parts of a whole form body.
pub async fn parse_form(body: Bytes, boundary: String) -> Result<DeployForm, String> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let limits = multer::SizeLimit::new().for_field("manifest", MAX_MANIFEST);
    let constraints = multer::Constraints::new().size_limit(limits);
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut manifest: Option<(String, String)> = None;
    let mut wasm: Option<Vec<u8>> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(malformed(&e)),
        };
        let name = match field.name() {
            Some(n @ ("manifest" | "wasm")) => n.to_string(),
            Some(other) => {
                return Err(format!(
                    "unexpected form part `{}`: {EXPECTED}",
                    quote(other)
                ))
            }
            None => return Err(format!("a form part has no name: {EXPECTED}")),
        };
        let file = field.file_name().map(str::to_string);
        if file.as_ref().is_some_and(|f| f.len() > MAX_FILE_NAME) {
            return Err(format!(
                "the `{name}` part's file name is longer than {MAX_FILE_NAME} bytes"
            ));
        }
        let data = field.bytes().await.map_err(|e| match e {
            multer::Error::FieldSizeExceeded { .. } => format!(
                "the `manifest` part is larger than {} KiB: expected the manifest's TOML",
                MAX_MANIFEST >> 10
            ),
            e @ (multer::Error::IncompleteFieldData { .. } | multer::Error::IncompleteStream) => {
                malformed(&e)
            }
            e => format!("the form part `{name}` could not be read: {}", clip(&e)),
        })?;
        let taken = if name == "manifest" {
            manifest.is_some()
        } else {
            wasm.is_some()
        };
        if taken {
            return Err(format!(
                "the form has more than one `{name}` part: {EXPECTED}, one of each"
            ));
        }
        if name == "manifest" {
            let Ok(text) = String::from_utf8(data.to_vec()) else {
                return Err(
                    "the `manifest` part is not UTF-8 text: expected the manifest's TOML".into(),
                );
            };
            manifest = Some((file.unwrap_or_else(|| "manifest.toml".into()), text));
        } else {
            wasm = Some(data.to_vec());
        }
    }
    match (manifest, wasm) {
        (Some((label, manifest)), Some(wasm)) => Ok(DeployForm {
            label,
            manifest,
            wasm,
        }),
        (None, None) => Err(format!("the form has no parts: {EXPECTED}")),
        (None, Some(_)) => Err(format!("the form has no `manifest` part: {EXPECTED}")),
        (Some(_), None) => Err(format!("the form has no `wasm` part: {EXPECTED}")),
    }
}

/// A form multer could not parse.
fn malformed(e: &multer::Error) -> String {
    match e {
        multer::Error::IncompleteStream | multer::Error::IncompleteFieldData { .. } => {
            format!("the form ends early (truncated, or its boundary never closes it): {EXPECTED}")
        }
        e => format!("the form is malformed ({}): {EXPECTED}", clip(e)),
    }
}

/// An error's text, cut short: some quote the client's bytes.
fn clip(e: &impl std::fmt::Display) -> String {
    quote(&e.to_string())
}

/// At most [`QUOTED`] characters of `text`.
fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTED {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(QUOTED).collect();
    cut.push_str("...");
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "XyZ";

    fn part(name: &str, file: Option<&str>, data: &[u8]) -> Vec<u8> {
        let file = file.map_or(String::new(), |f| format!("; filename=\"{f}\""));
        let mut out =
            format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n")
                .into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    fn form(parts: &[Vec<u8>]) -> Bytes {
        let mut out = parts.concat();
        out.extend_from_slice(format!("--{B}--\r\n").as_bytes());
        out.into()
    }

    async fn parse(body: Bytes) -> Result<DeployForm, String> {
        parse_form(body, B.into()).await
    }

    fn manifest() -> Vec<u8> {
        part("manifest", Some("hello.toml"), b"name = \"hello\"")
    }

    fn wasm() -> Vec<u8> {
        part("wasm", Some("hello.wasm"), b"\0asm")
    }

    #[test]
    fn the_content_type_must_be_a_form_with_a_boundary() {
        let no = parse_boundary(None).unwrap_err();
        assert!(
            no.contains("no Content-Type") && no.contains(EXPECTED),
            "{no}"
        );
        let json = parse_boundary(Some(&HeaderValue::from_static("application/json")));
        assert!(json.unwrap_err().contains("is `application/json`"));
        let bare = parse_boundary(Some(&HeaderValue::from_static("multipart/form-data")));
        assert!(bare.unwrap_err().contains("has no boundary"));
        let huge = HeaderValue::from_str(&"x".repeat(10_000)).unwrap();
        assert!(parse_boundary(Some(&huge)).unwrap_err().len() < 400);
        let ok = HeaderValue::from_static("multipart/form-data; boundary=XyZ");
        assert_eq!(parse_boundary(Some(&ok)).unwrap(), "XyZ");
    }

    #[tokio::test]
    async fn a_good_form_gives_both_parts() {
        let f = parse(form(&[manifest(), wasm()])).await.unwrap();
        assert_eq!(f.label, "hello.toml");
        assert_eq!(f.manifest, "name = \"hello\"");
        assert_eq!(f.wasm, b"\0asm");
    }

    #[tokio::test]
    async fn each_malformed_form_is_named() {
        let cases: Vec<(&str, Bytes, &str)> = vec![
            ("empty", Bytes::new(), "ends early"),
            ("only the closing line", form(&[]), "no parts"),
            ("no wasm", form(&[manifest()]), "no `wasm` part"),
            ("no manifest", form(&[wasm()]), "no `manifest` part"),
            (
                "two manifests",
                form(&[manifest(), manifest(), wasm()]),
                "more than one `manifest` part",
            ),
            (
                "two modules",
                form(&[manifest(), wasm(), wasm()]),
                "more than one `wasm` part",
            ),
            (
                "another part",
                form(&[manifest(), part("extra", None, b"x"), wasm()]),
                "unexpected form part `extra`",
            ),
            (
                "a huge part name",
                form(&[part(&"n".repeat(100_000), None, b"x")]),
                "unexpected form part `nnnn",
            ),
            (
                "a huge file name",
                form(&[part("manifest", Some(&"f".repeat(1000)), b"x")]),
                "file name is longer than 255 bytes",
            ),
            (
                "not UTF-8",
                form(&[part("manifest", None, b"\xff\xfe"), wasm()]),
                "not UTF-8 text",
            ),
            (
                "a huge manifest",
                form(&[part("manifest", None, &vec![b'#'; 2 << 20]), wasm()]),
                "larger than 1024 KiB",
            ),
            (
                "truncated",
                Bytes::from(
                    [
                        manifest(),
                        b"--XyZ\r\nContent-Disposition: form-data; name=\"wasm\"\r\n\r\n\0as"
                            .to_vec(),
                    ]
                    .concat(),
                ),
                "ends early",
            ),
            (
                "no boundary line at all",
                Bytes::from_static(b"just some bytes"),
                EXPECTED,
            ),
        ];
        for (what, body, expected) in cases {
            let e = parse(body).await.unwrap_err();
            assert!(e.contains(expected), "{what}: {e}");
            assert!(e.len() < 400, "{what}: the error quotes too much: {e}");
        }
    }
}
