//! Routing a parsed request: what it is answered with, from the site's table, the
//! files' validators and ranges, the echo route or `--metrics`. Parsing never routes
//! ([`crate::request`] knows nothing of the site); this is where the two meet.

use crate::echo;
use crate::reject::{Malformed, Reject};
use crate::request::{BodyKind, Head, Method};
use crate::response::{Answer, Prerendered};
use crate::site::{Allow, Entry, Snapshot};
use crate::static_files;
use crate::stats::{HttpStats, MetricsSource};

/// The answer to a well-framed request.
#[derive(Debug)]
pub(crate) struct Decision<'a> {
    pub(crate) response: Answer<'a>,
    pub(crate) head_only: bool,
    pub(crate) keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) body: BodyKind,
    pub(crate) expect_continue: bool,
}

/// Routes the parsed request `req` ([`crate::request::scan`], from the start of
/// `head`): what it is answered with, or the rejection of a target that routes nowhere
/// (answer with `reject.status()` and close).
#[inline]
pub(crate) fn decide<'a>(
    site: &'a Snapshot,
    req: &Head<'_>,
    head: &[u8],
    metrics: Option<(&dyn MetricsSource, usize, &HttpStats)>,
) -> Result<Decision<'a>, Reject> {
    let response = route(site, req, head, metrics)?;
    Ok(Decision {
        response,
        head_only: req.method == Method::Head,
        keep_alive: req.keep_alive,
        http10: req.http10,
        body: req.body,
        expect_continue: req.expect_continue,
    })
}

/// The answer to `req` (parsed from the start of `head`), or the rejection of a
/// target that routes nowhere.
pub(crate) fn route<'a>(
    site: &'a Snapshot,
    req: &Head<'_>,
    head: &[u8],
    metrics: Option<(&dyn MetricsSource, usize, &HttpStats)>,
) -> Result<Answer<'a>, Reject> {
    let (known, target) = (req.method, req.target);
    if target == b"*" {
        return match known {
            Method::Options => Ok(Answer::Shared(site.options(Allow::Server))),
            _ => Err(Reject::BadRequest(Malformed::Target)),
        };
    }
    let path = routing_path(target)?;
    let raw_path = path;
    let decoded;
    // The target holds no NUL (the request line's check refused it); only an escape
    // can make one.
    // Paths are short: a plain scan costs less than memchr's setup (which `contains`
    // calls).
    #[allow(clippy::manual_contains)]
    let escaped = path.iter().any(|&b| b == b'%');
    let path = if escaped {
        decoded = percent_decode(path).ok_or(Reject::BadRequest(Malformed::Target))?;
        if memchr::memchr(0, &decoded).is_some() {
            return Err(Reject::BadRequest(Malformed::Target));
        }
        &decoded[..]
    } else {
        path
    };
    let response = match (known, site.lookup(path)) {
        (Method::Unknown, _) => Answer::Shared(site.error(501)),
        // `--metrics`: looked at only when no route matched, so routing costs nothing
        // more (a route or file at the same path wins).
        (_, None) if metrics.is_some_and(|m| m.0.path() == path) => match (known, metrics) {
            (Method::Get | Method::Head, Some((m, worker, own))) => metrics_answer(m, worker, own),
            (Method::Options, _) => Answer::Shared(site.options(Allow::Static)),
            _ => Answer::Shared(site.error(405)),
        },
        (_, None) => Answer::Shared(site.error(404)),
        (Method::Options, Some(Entry::Echo)) => Answer::Shared(site.options(Allow::Echo)),
        (Method::Options, Some(_)) => Answer::Shared(site.options(Allow::Static)),
        (Method::Get | Method::Head, Some(Entry::Fixed(r))) => Answer::Shared(r),
        // A file without variants and without validators or ranges asked for: its
        // pre-rendered 200. (Accept-Encoding is not looked for here: browsers send it
        // with every request, and only a file with variants needs it.)
        (Method::Get | Method::Head, Some(Entry::File(f))) if req.conditional == 0 && f.variants.is_empty() => {
            Answer::Shared(&f.ok)
        }
        (Method::Get | Method::Head, Some(Entry::File(f))) => {
            static_files::serve(f, known == Method::Get, req.conditional, req.fields)
        }
        (Method::Get | Method::Head, Some(Entry::Redirect)) => static_files::redirect(raw_path, target, site.headers()),
        (Method::Get | Method::Head, Some(Entry::Echo)) => Answer::Owned(Box::new(echo::head(&head[..req.len]))),
        (Method::Echo, Some(Entry::Echo)) => Answer::Echo(echo::content_type(req.content_type)),
        (Method::Other | Method::Connect, Some(Entry::Echo)) => Answer::Shared(site.echo_405()),
        (Method::Echo | Method::Other | Method::Connect, Some(_)) => Answer::Shared(site.error(405)),
    };
    Ok(response)
}

/// The path part of the target used for routing: origin-form `/p?q` or absolute-form
/// `http://host/p?q`; the query is dropped. Anything else (authority-form outside
/// CONNECT, which never gets here) routes nowhere: 400.
fn routing_path(t: &[u8]) -> Result<&[u8], Reject> {
    let path = if t.first() == Some(&b'/') {
        t
    } else if let Some(rest) = strip_scheme(t) {
        match memchr::memchr2(b'/', b'?', rest) {
            Some(i) if rest[i] == b'/' => &rest[i..],
            _ => &b"/"[..],
        }
    } else {
        return Err(Reject::BadRequest(Malformed::Target));
    };
    let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
    Ok(&path[..end])
}

fn strip_scheme(t: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"http://"[..], b"https://"] {
        if t.len() > scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&t[scheme.len()..]);
        }
    }
    None
}

/// Decodes `%XX` escapes; `None` if an escape is malformed.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = (*s.get(i + 1)? as char).to_digit(16)?;
            let lo = (*s.get(i + 2)? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The counters of `metrics`, with this worker's live ones, as a fresh response.
#[cold]
fn metrics_answer(metrics: &dyn MetricsSource, worker: usize, own: &HttpStats) -> Answer<'static> {
    let text = metrics.render(worker, own);
    Answer::Owned(Box::new(Prerendered::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        bytes::Bytes::from(text),
        ["Cache-Control: no-store"],
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_path_handles_forms_and_query() {
        assert_eq!(routing_path(b"/a?b=c").unwrap(), b"/a");
        assert_eq!(routing_path(b"http://example.com/x/y?q").unwrap(), b"/x/y");
        assert_eq!(routing_path(b"HTTP://example.com").unwrap(), b"/");
        assert_eq!(routing_path(b"http://example.com?q").unwrap(), b"/");
        assert_eq!(routing_path(b"*"), Err(Reject::BadRequest(Malformed::Target)));
        assert_eq!(routing_path(b"example.com:443"), Err(Reject::BadRequest(Malformed::Target)));
        assert_eq!(routing_path(b"foo"), Err(Reject::BadRequest(Malformed::Target)));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b%2F").unwrap(), b"/a b/");
        assert!(percent_decode(b"/%zz").is_none());
        assert!(percent_decode(b"/%2").is_none());
    }
}
