//! What is served: a table from path to a pre-rendered response.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

/// The value of the `Server` header.
pub const SERVER_NAME: &str = "duet";

/// A response whose status line and headers were rendered once, at start. Only `Date`
/// (and `Connection` when needed) is added per request.
#[derive(Debug)]
pub struct Prerendered {
    /// Status line and headers, each ending in CRLF, without `Date`, `Connection` and
    /// the final blank line.
    head: Box<[u8]>,
    body: Bytes,
    status: u16,
}

impl Prerendered {
    /// Renders a response with `Server`, `Content-Type`, `Content-Length` and `extra`
    /// header lines (each `Name: value`).
    pub fn new(status: u16, content_type: &str, body: Bytes, extra: &[&str]) -> Self {
        let mut head = format!("HTTP/1.1 {status} {}\r\nServer: {SERVER_NAME}\r\n", reason(status));
        if !content_type.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        for line in extra {
            head.push_str(line);
            head.push_str("\r\n");
        }
        Prerendered { head: head.into_bytes().into_boxed_slice(), body, status }
    }

    fn error(status: u16, extra: &[&str]) -> Self {
        let body = format!("{status} {}\n", reason(status));
        Prerendered::new(status, "text/plain; charset=utf-8", Bytes::from(body), extra)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// The body (sent unless the request was HEAD).
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// The reason phrase for the status codes duet sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The statuses that have a pre-rendered error response.
pub(crate) const ERROR_STATUSES: [u16; 10] = [400, 404, 405, 408, 413, 414, 417, 431, 501, 505];

/// Up to this many routes are matched by a linear scan instead of a hash.
const FEW_ROUTES: usize = 8;

/// Routes and error responses. Shared by all threads of a server; read-only.
#[derive(Debug)]
pub struct Site {
    routes: HashMap<Box<[u8]>, Arc<Prerendered>>,
    /// The same routes as a list when there are at most `FEW_ROUTES` of them.
    few: Vec<(Box<[u8]>, Arc<Prerendered>)>,
    errors: Vec<Arc<Prerendered>>,
}

impl Site {
    /// Starts an empty site.
    pub fn builder() -> SiteBuilder {
        SiteBuilder { routes: HashMap::new() }
    }

    /// The default site: `GET /` answers `200 text/plain` `Hello, World!`.
    pub fn hello() -> Self {
        Site::builder().route("/", "text/plain", Bytes::from_static(b"Hello, World!")).build()
    }

    /// The response for a decoded path, if any.
    pub fn lookup(&self, path: &[u8]) -> Option<&Arc<Prerendered>> {
        // A handful of routes is the common case (benchmarks): comparing a few short
        // slices costs less than hashing one.
        if !self.few.is_empty() || self.routes.is_empty() {
            return self.few.iter().find(|(p, _)| **p == *path).map(|(_, r)| r);
        }
        self.routes.get(path)
    }

    /// The pre-rendered error response for `status` (one of `ERROR_STATUSES`).
    pub(crate) fn error(&self, status: u16) -> &Arc<Prerendered> {
        let i = ERROR_STATUSES.iter().position(|&s| s == status).unwrap_or(0);
        &self.errors[i]
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there is no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Builds a [`Site`].
#[derive(Debug)]
pub struct SiteBuilder {
    routes: HashMap<Box<[u8]>, Arc<Prerendered>>,
}

impl SiteBuilder {
    /// Serves `body` with `content_type` and status 200 at `path` (decoded, starting
    /// with `/`).
    pub fn route(mut self, path: &str, content_type: &str, body: Bytes) -> Self {
        let resp = Prerendered::new(200, content_type, body, &[]);
        self.routes.insert(path.as_bytes().into(), Arc::new(resp));
        self
    }

    /// Finishes the site, rendering the error responses.
    pub fn build(self) -> Site {
        let errors = ERROR_STATUSES
            .iter()
            .map(|&s| {
                let extra: &[&str] = if s == 405 { &["Allow: GET, HEAD"] } else { &[] };
                Arc::new(Prerendered::error(s, extra))
            })
            .collect();
        let few = if self.routes.len() <= FEW_ROUTES {
            self.routes.iter().map(|(p, r)| (p.clone(), Arc::clone(r))).collect()
        } else {
            Vec::new()
        };
        Site { routes: self.routes, few, errors }
    }
}
