//! The web dashboard at `/_dispatcher/ui/`: three files embedded in the binary (no build step,
//! nothing fetched at run time). The page itself needs no token; it asks for the admin token in
//! a login form, keeps it in the tab's `sessionStorage` (never in a URL) and sends it with
//! every API call it makes.

use http::{header, HeaderValue, Response, StatusCode};

use super::response::{full, Body};

/// The dashboard's prefix.
pub const PREFIX: &str = "/_dispatcher/ui";

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// The dashboard file at `path`, or `None` if `path` is not the dashboard's.
pub fn page(path: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix(PREFIX)?;
    let (body, kind) = match rest {
        "" => {
            let mut resp = Response::new(full(""));
            *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
            resp.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_static("/_dispatcher/ui/"),
            );
            return Some(resp);
        }
        "/" | "/index.html" => (INDEX, "text/html; charset=utf-8"),
        "/app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/style.css" => (STYLE, "text/css; charset=utf-8"),
        _ if rest.starts_with('/') => {
            return Some(super::admin::err(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no dashboard file at {path}: the dashboard is at {PREFIX}/"),
            ))
        }
        // `/_dispatcher/uiX` is not the dashboard's.
        _ => return None,
    };
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only its own script, style and API; no framing by other sites.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Some(resp)
}
