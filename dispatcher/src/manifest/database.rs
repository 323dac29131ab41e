//! Database endpoints named in `[network] allow` as `mysql://` (or `mariadb://`) URLs: the
//! host serves a guest's sessions to them from its pool (see `pool` in `[network]`).

use percent_encoding::percent_decode_str;

/// A `mysql://user:password@host:port/schema` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub schema: Option<String>,
}

impl DatabaseUrl {
    /// `Some` for a `mysql://` or `mariadb://` URL, with what is wrong with it if anything;
    /// `None` for any other entry.
    pub fn parse(s: &str) -> Option<Result<DatabaseUrl, String>> {
        let rest = s
            .strip_prefix("mysql://")
            .or_else(|| s.strip_prefix("mariadb://"))?;
        Some(parse_rest(rest))
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn decode(s: &str, what: &str) -> Result<String, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("the {what} is not UTF-8 once percent-decoded"))
}

fn parse_rest(rest: &str) -> Result<DatabaseUrl, String> {
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((user, pw)) => (decode(user, "user")?, decode(pw, "password")?),
            None => (decode(u, "user")?, String::new()),
        },
        None => ("root".to_string(), String::new()),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host without its closing `]`")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL has no host: expected mysql://user:password@host:port/schema".into());
    }
    let port = match port {
        None | Some("") => 3306,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port: expected 1 to 65535"))?,
    };
    let schema = path
        .strip_prefix('/')
        .map(|p| p.split(['?', '#']).next().unwrap_or_default())
        .filter(|p| !p.is_empty())
        .map(|p| decode(p, "schema"))
        .transpose()?;
    Ok(DatabaseUrl {
        host,
        port,
        user,
        password,
        schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_manifests_write() {
        let d = DatabaseUrl::parse("mysql://app:p%40ss@db.internal:3307/orders?ssl=false")
            .unwrap()
            .unwrap();
        assert_eq!(
            d,
            DatabaseUrl {
                host: "db.internal".into(),
                port: 3307,
                user: "app".into(),
                password: "p@ss".into(),
                schema: Some("orders".into()),
            }
        );
        let d = DatabaseUrl::parse("mysql://root@127.0.0.1/test")
            .unwrap()
            .unwrap();
        assert_eq!((d.port, d.password.as_str()), (3306, ""));
        assert_eq!(d.address(), "127.0.0.1:3306");
        let d = DatabaseUrl::parse("mariadb://u@[::1]:3306")
            .unwrap()
            .unwrap();
        assert_eq!((d.address(), d.schema), ("[::1]:3306".to_string(), None));
        assert!(DatabaseUrl::parse("db:3306").is_none());
        assert!(DatabaseUrl::parse("mysql://u@h:99999/x").unwrap().is_err());
    }
}
