//! HTTP route patterns and the table that matches request paths to functions.
//!
//! A pattern is exact (`/echo`), has named parameters (`/orders/:id`), or ends in a tail
//! wildcard (`/static/...`). When several routes match, the most specific wins: a literal
//! segment beats a parameter, and a parameter beats the wildcard.

use std::fmt;

use http::Method;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal this text.
    Literal(String),
    /// Matches any one non-empty segment and binds it to this name.
    Param(String),
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    /// The pattern as written, for logs and `X_MATCHED_ROUTE`.
    source: String,
    /// The fixed segments before any wildcard.
    segments: Vec<Segment>,
    /// Whether the pattern ends in `/...` and so matches any remainder.
    wildcard: bool,
}

/// The result of matching a path against a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The part of the path the fixed segments matched (`SCRIPT_NAME`), raw.
    pub script_name: String,
    /// The rest of the path after it (`PATH_INFO`), raw (still percent-encoded).
    pub raw_path_info: String,
    /// Parameter names and their percent-decoded values, in pattern order.
    pub params: Vec<(String, String)>,
}

impl RoutePattern {
    /// The pattern as written in the manifest.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Parses a pattern, with an error message that says what was expected.
    pub fn parse(source: &str) -> Result<Self, String> {
        let expected = "expected a path such as \"/echo\", \"/orders/:id\" or \"/static/...\"";
        if !source.starts_with('/') {
            return Err(format!("`{source}` does not start with `/`: {expected}"));
        }
        if source.starts_with("/_dispatcher") {
            return Err(format!(
                "`{source}` is under `/_dispatcher`, which the platform reserves: {expected}"
            ));
        }
        let mut segments = Vec::new();
        let mut wildcard = false;
        let body = &source[1..];
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == "..." {
                if !last {
                    return Err(format!(
                        "`{source}`: `...` may only be the last segment: {expected}"
                    ));
                }
                wildcard = true;
            } else if let Some(name) = part.strip_prefix(':') {
                let ok = name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !ok {
                    return Err(format!(
                        "`{source}`: `:{name}` is not a valid parameter: expected `:name` with letters, digits and `_`"
                    ));
                }
                if segments
                    .iter()
                    .any(|s| matches!(s, Segment::Param(n) if n.eq_ignore_ascii_case(name)))
                {
                    return Err(format!(
                        "`{source}`: parameter `:{name}` appears twice: {expected}"
                    ));
                }
                segments.push(Segment::Param(name.to_string()));
            } else if part.is_empty() {
                return Err(format!("`{source}` has an empty segment: {expected}"));
            } else if part
                .bytes()
                .any(|b| !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b)))
            {
                return Err(format!(
                    "`{source}`: segment `{part}` has characters that are not allowed in a URL path: {expected}"
                ));
            } else {
                segments.push(Segment::Literal(part.to_string()));
            }
        }
        Ok(RoutePattern {
            source: source.to_string(),
            segments,
            wildcard,
        })
    }

    /// Matches a raw request path (no query). `None` if it does not match.
    pub fn matches(&self, path: &str) -> Option<RouteMatch> {
        let body = path.strip_prefix('/')?;
        // Byte offset in `body` where the next segment starts.
        let mut pos = 0;
        let mut params = Vec::new();
        for seg in &self.segments {
            let rest = body.get(pos..)?;
            let end = rest.find('/').unwrap_or(rest.len());
            let part = &rest[..end];
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::Param(name) if !part.is_empty() => {
                    params.push((name.clone(), percent_decode(part)));
                }
                _ => return None,
            }
            pos += end + 1;
        }
        // The fixed segments cover `body[..fixed_len]`; the remainder is empty or starts with '/'.
        let fixed_len = pos.saturating_sub(1);
        let remainder = &body[fixed_len..];
        if !self.wildcard && !remainder.is_empty() {
            return None;
        }
        let (script_name, raw_path_info) = if self.segments.is_empty() && self.wildcard {
            (String::new(), path.to_string())
        } else {
            (format!("/{}", &body[..fixed_len]), remainder.to_string())
        };
        Some(RouteMatch {
            script_name,
            raw_path_info,
            params,
        })
    }

    /// How specific the pattern is: compared lexicographically, higher wins.
    fn specificity(&self) -> (Vec<u8>, u8) {
        let segs = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 2,
                Segment::Param(_) => 1,
            })
            .collect();
        (segs, u8::from(!self.wildcard))
    }

    /// The same pattern with parameter names erased: two routes with one shape overlap.
    fn shape(&self) -> (Vec<Option<&str>>, bool) {
        let segs = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Param(_) => None,
            })
            .collect();
        (segs, self.wildcard)
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Percent-decodes a path component, lossily for invalid UTF-8.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A route bound to a value (a function name, or the function itself).
#[derive(Debug, Clone)]
struct Route<T> {
    pattern: RoutePattern,
    methods: Option<Vec<Method>>,
    target: T,
}

/// The routes of all deployed functions.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<Route<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

/// What the table says about a request.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// A route matched the path and allows the method.
    Found {
        target: &'a T,
        pattern: &'a RoutePattern,
        matched: RouteMatch,
    },
    /// Some route matches the path, but none allows the method; these are the allowed ones.
    MethodNotAllowed(Vec<Method>),
    /// No route matches the path.
    NotFound,
}

impl<T: Clone> RouteTable<T> {
    /// Adds a route. If it overlaps a route already in the table (same shape, and a method in
    /// common), the route is not added and the owner of the other route is returned.
    pub fn insert(
        &mut self,
        pattern: RoutePattern,
        methods: Option<Vec<Method>>,
        target: T,
    ) -> Result<(), T> {
        for r in &self.routes {
            if r.pattern.shape() == pattern.shape() && methods_overlap(&r.methods, &methods) {
                return Err(r.target.clone());
            }
        }
        self.routes.push(Route {
            pattern,
            methods,
            target,
        });
        // Most specific first, so the first match wins.
        self.routes
            .sort_by_key(|r| std::cmp::Reverse(r.pattern.specificity()));
        Ok(())
    }
}

impl<T> RouteTable<T> {
    /// Finds the route for a method and raw path.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_, T> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut path_matched = false;
        for r in &self.routes {
            let Some(matched) = r.pattern.matches(path) else {
                continue;
            };
            match &r.methods {
                Some(ms) if !ms.contains(method) => {
                    path_matched = true;
                    allowed.extend(ms.iter().cloned());
                }
                _ => {
                    return Lookup::Found {
                        target: &r.target,
                        pattern: &r.pattern,
                        matched,
                    }
                }
            }
        }
        if path_matched {
            allowed.dedup();
            Lookup::MethodNotAllowed(allowed)
        } else {
            Lookup::NotFound
        }
    }
}

fn methods_overlap(a: &Option<Vec<Method>>, b: &Option<Vec<Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RoutePattern {
        RoutePattern::parse(s).unwrap()
    }

    #[test]
    fn exact() {
        let m = p("/echo").matches("/echo").unwrap();
        assert_eq!(m.script_name, "/echo");
        assert_eq!(m.raw_path_info, "");
        assert!(p("/echo").matches("/echo/").is_none());
        assert!(p("/echo").matches("/echox").is_none());
        assert!(p("/echo").matches("/").is_none());
        assert!(p("/").matches("/").is_some());
        assert!(p("/").matches("/x").is_none());
        assert!(p("/a/b").matches("/a/b").is_some());
        assert!(p("/a/b").matches("/a").is_none());
    }

    #[test]
    fn params() {
        let m = p("/orders/:id").matches("/orders/4%202").unwrap();
        assert_eq!(m.params, vec![("id".to_string(), "4 2".to_string())]);
        assert_eq!(m.script_name, "/orders/4%202");
        assert!(p("/orders/:id").matches("/orders/").is_none());
        assert!(p("/orders/:id").matches("/orders").is_none());
        assert!(p("/orders/:id").matches("/orders/1/2").is_none());
        let m = p("/u/:user/posts/:post").matches("/u/ann/posts/7").unwrap();
        assert_eq!(m.params.len(), 2);
    }

    #[test]
    fn wildcard() {
        let w = p("/static/...");
        let m = w.matches("/static/a/b%20c").unwrap();
        assert_eq!(m.script_name, "/static");
        assert_eq!(m.raw_path_info, "/a/b%20c");
        assert_eq!(w.matches("/static").unwrap().raw_path_info, "");
        assert!(w.matches("/staticx").is_none());
        let all = p("/...");
        let m = all.matches("/x/y").unwrap();
        assert_eq!(m.script_name, "");
        assert_eq!(m.raw_path_info, "/x/y");
    }

    #[test]
    fn bad_patterns() {
        for bad in [
            "echo",
            "/a//b",
            "/a/.../b",
            "/:",
            "/:1x",
            "/a b",
            "/_dispatcher/x",
            "/:a/:a",
        ] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn most_specific_wins_and_405() {
        let mut t = RouteTable::default();
        t.insert(p("/orders/:id"), None, "by_id".to_string())
            .unwrap();
        t.insert(
            p("/orders/new"),
            Some(vec![Method::POST]),
            "new".to_string(),
        )
        .unwrap();
        t.insert(p("/..."), None, "fallback".to_string()).unwrap();
        match t.lookup(&Method::POST, "/orders/new") {
            Lookup::Found { target, .. } => assert_eq!(target, "new"),
            other => panic!("{other:?}"),
        }
        match t.lookup(&Method::GET, "/orders/new") {
            Lookup::Found { target, .. } => assert_eq!(target, "by_id"),
            other => panic!("{other:?}"),
        }
        match t.lookup(&Method::GET, "/other") {
            Lookup::Found { target, .. } => assert_eq!(target, "fallback"),
            other => panic!("{other:?}"),
        }

        let mut t = RouteTable::default();
        t.insert(p("/echo"), Some(vec![Method::POST]), "echo".to_string())
            .unwrap();
        assert!(
            matches!(t.lookup(&Method::GET, "/echo"), Lookup::MethodNotAllowed(m) if m == vec![Method::POST])
        );
        assert!(matches!(t.lookup(&Method::GET, "/nope"), Lookup::NotFound));
    }

    #[test]
    fn overlaps() {
        let mut t = RouteTable::default();
        t.insert(p("/orders/:id"), Some(vec![Method::GET]), "a".to_string())
            .unwrap();
        assert_eq!(
            t.insert(p("/orders/:x"), None, "b".to_string()),
            Err("a".to_string())
        );
        t.insert(p("/orders/:x"), Some(vec![Method::POST]), "c".to_string())
            .unwrap();
    }
}
