//! The target: `http://HOST[:PORT][/PATH[?QUERY]]`, nothing more.

use std::fmt;

/// A parsed `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host as written (brackets kept for IPv6 literals), for the Host header.
    pub host: String,
    /// The port (80 when the URL has none).
    pub port: u16,
    /// Request target, always starting with `/` (query included).
    pub path: String,
}

/// Why a URL was refused; its Display is the one line the user sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// An `https://` URL: TLS is not spoken.
    Https,
    /// The URL as given, and what is wrong with it.
    Bad(String, &'static str),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Https => {
                write!(f, "https:// is not supported: duet load speaks plain HTTP/1.1 (use an http:// URL)")
            }
            UrlError::Bad(url, why) => write!(f, "bad URL '{url}': {why} (expected http://HOST[:PORT][/PATH])"),
        }
    }
}

impl Target {
    /// Parses `http://HOST[:PORT][/PATH[?QUERY]]`.
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let bad = |why| UrlError::Bad(url.to_string(), why);
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(UrlError::Https);
        }
        if !lower.starts_with("http://") {
            return Err(bad("only http:// URLs are supported"));
        }
        let rest = &url["http://".len()..];
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = match path.find('#') {
            Some(i) => path[..i].to_string(),
            None => path,
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| bad("unclosed '[' in the host"))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("junk after the IPv6 address")),
            };
            (&authority[..end + 2], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("no host"));
        }
        if host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad("spaces in the host"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        if path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(bad("spaces in the path (percent-encode them)"));
        }
        Ok(Target { host: host.to_string(), port, path })
    }

    /// `host:port` for resolving (brackets stay, which `ToSocketAddrs` wants for IPv6).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The Host header value: the port is left out when it is the default.
    pub fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            self.authority()
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 8080, "/a/b?x=1"));
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("localhost", 80, "/"));
        assert_eq!(t.host_header(), "localhost");
        let t = Target::parse("http://[::1]:9000?q").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("[::1]", 9000, "/?q"));
        assert_eq!(t.authority(), "[::1]:9000");
    }

    #[test]
    fn refuses_https_and_malformed_urls() {
        assert_eq!(Target::parse("https://example.com/"), Err(UrlError::Https));
        for bad in
            ["ftp://x/", "127.0.0.1:80", "http://", "http://h:0/", "http://h:99999/", "http://h:x/", "http://[::1"]
        {
            assert!(matches!(Target::parse(bad), Err(UrlError::Bad(..))), "{bad}");
        }
    }
}
