//! A function's outbound network allow-list (`[network]` in its manifest).
//!
//! ```toml
//! [network]
//! allow = ["127.0.0.1:3306", "db:3306", "api.example.com:443", "localhost:*"]
//! listen = ["127.0.0.1:*"]     # addresses it may bind and listen on; none by default
//! ```
//!
//! Everything else is denied. Names are resolved by the host (`sock_getaddrinfo`), only if
//! they appear in the list, and a connection to an address that a name resolved to is allowed
//! on that name's ports.

use std::net::{IpAddr, SocketAddr};

/// Which hosts an entry covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Ip(IpAddr),
    /// A DNS name, lower case.
    Name(String),
    /// `*`: any address.
    Any,
}

/// One `host:port` entry; `port` `None` means any port (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: HostPattern,
    port: Option<u16>,
}

impl Endpoint {
    /// Parses `host:port`, `[v6]:port`, with `*` as the port for any; or a URL such as
    /// `mysql://user:pw@db:3306/app`, whose host and port (or the scheme's default) are used,
    /// so that `allow = ["${DATABASE_URL}"]` keeps the address out of the manifest.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some((scheme, rest)) = s.split_once("://") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let has_port = hostport.rsplit_once(':').is_some_and(|(_, p)| {
                p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() && !hostport.ends_with(']')
            });
            if has_port {
                return Self::parse(hostport).map_err(|e| format!("in URL `{scheme}://…`: {e}"));
            }
            let port = match scheme {
                "http" | "ws" => 80,
                "https" | "wss" => 443,
                "mysql" | "mariadb" => 3306,
                "postgres" | "postgresql" => 5432,
                "redis" => 6379,
                _ => return Err(format!("`{scheme}://…` has no port, and `{scheme}` has no default port: expected host:port in the URL")),
            };
            return Self::parse(&format!("{hostport}:{port}"));
        }
        let expected =
            "expected host:port, such as \"db:3306\", \"127.0.0.1:*\" or \"[::1]:80\", or a URL";
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` has no port: {expected}"))?;
        let port = match port {
            "*" => None,
            p => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{s}`: `{p}` is not a port: {expected}"))?,
            ),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host == "*" {
            HostPattern::Any
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            HostPattern::Name(host.to_ascii_lowercase())
        } else {
            return Err(format!(
                "`{s}`: `{host}` is not a host name or IP address: {expected}"
            ));
        };
        Ok(Endpoint { host, port })
    }

    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether a connection to `addr` falls under this entry; `resolved` holds the guest's
    /// own name look-ups.
    fn covers(&self, addr: SocketAddr, resolved: &[(String, IpAddr)]) -> bool {
        self.port_matches(addr.port())
            && match &self.host {
                HostPattern::Any => true,
                HostPattern::Ip(ip) => *ip == addr.ip(),
                HostPattern::Name(n) => resolved
                    .iter()
                    .any(|(name, ip)| *ip == addr.ip() && name.eq_ignore_ascii_case(n)),
            }
    }
}

/// The allow-lists of one function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Where it may connect.
    pub allow: Vec<Endpoint>,
    /// Where it may bind and listen.
    pub listen: Vec<Endpoint>,
    /// Endpoints the host serves itself (the database session pool): a connection the
    /// allow-list permits to `.0` goes to the host's listener at `.1` instead.
    pub redirects: Vec<(Endpoint, SocketAddr)>,
}

impl NetPolicy {
    /// May the function look this name up?
    pub fn allows_name(&self, name: &str) -> bool {
        self.allow.iter().any(|e| match &e.host {
            HostPattern::Name(n) => n.eq_ignore_ascii_case(name),
            HostPattern::Any => true,
            HostPattern::Ip(_) => false,
        })
    }

    /// May the function connect to `addr`? `resolved` holds the `(name, ip)` pairs its own
    /// lookups returned.
    pub fn allows_connect(&self, addr: SocketAddr, resolved: &[(String, IpAddr)]) -> bool {
        self.allow.iter().any(|e| e.covers(addr, resolved))
    }

    /// Where a permitted connection to `addr` really goes, if the host serves it itself.
    pub fn redirect(&self, addr: SocketAddr, resolved: &[(String, IpAddr)]) -> Option<SocketAddr> {
        self.redirects
            .iter()
            .find(|(e, _)| e.covers(addr, resolved))
            .map(|(_, to)| *to)
    }

    /// May the function bind `addr`? (Port 0 asks for any port, so it needs `*`.)
    pub fn allows_listen(&self, addr: SocketAddr) -> bool {
        self.listen.iter().any(|e| {
            (if addr.port() == 0 {
                e.port.is_none()
            } else {
                e.port_matches(addr.port())
            }) && match &e.host {
                HostPattern::Any => true,
                HostPattern::Ip(ip) => *ip == addr.ip(),
                HostPattern::Name(n) => n == "localhost" && addr.ip().is_loopback(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> NetPolicy {
        NetPolicy {
            allow: allow.iter().map(|s| Endpoint::parse(s).unwrap()).collect(),
            listen: vec![Endpoint::parse("127.0.0.1:*").unwrap()],
            redirects: Vec::new(),
        }
    }

    #[test]
    fn parses_entries() {
        assert!(Endpoint::parse("db:3306").is_ok());
        assert!(Endpoint::parse("[::1]:80").is_ok());
        assert!(Endpoint::parse("*:443").is_ok());
        assert!(Endpoint::parse("db").unwrap_err().contains("has no port"));
        assert!(Endpoint::parse("db:http")
            .unwrap_err()
            .contains("is not a port"));
        assert!(Endpoint::parse("d b:1")
            .unwrap_err()
            .contains("is not a host"));
        assert_eq!(
            Endpoint::parse("mysql://root:pw@db:3307/test").unwrap(),
            Endpoint::parse("db:3307").unwrap()
        );
        assert_eq!(
            Endpoint::parse("mysql://root@db/test").unwrap(),
            Endpoint::parse("db:3306").unwrap()
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:9000/hook?x=1").unwrap(),
            Endpoint::parse("127.0.0.1:9000").unwrap()
        );
        assert!(Endpoint::parse("foo://h/x").is_err());
    }

    #[test]
    fn ips_names_and_ports() {
        let p = policy(&["127.0.0.1:3306", "DB:*"]);
        assert!(p.allows_connect("127.0.0.1:3306".parse().unwrap(), &[]));
        assert!(!p.allows_connect("127.0.0.1:3307".parse().unwrap(), &[]));
        assert!(!p.allows_connect("10.0.0.9:5432".parse().unwrap(), &[]));
        let resolved = vec![("db".to_string(), "10.0.0.9".parse().unwrap())];
        assert!(p.allows_connect("10.0.0.9:5432".parse().unwrap(), &resolved));
        assert!(p.allows_name("db"));
        assert!(!p.allows_name("evil.example.com"));
        assert!(p.allows_listen("127.0.0.1:0".parse().unwrap()));
        assert!(!p.allows_listen("0.0.0.0:80".parse().unwrap()));
        assert!(!NetPolicy::default().allows_connect("127.0.0.1:3306".parse().unwrap(), &[]));
    }
}
